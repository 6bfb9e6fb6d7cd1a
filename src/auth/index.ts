// Caller identity and policy: authentication (JWTs of configured issuers with
// Kubernetes service-account tokens first, API keys stored as hashes, mTLS
// identities) and the deny-by-default policy. Nothing here knows RPCs or
// listeners: src/rpc applies the policy, src/server.ts hands the transport
// the authenticator.

export type { ApiKeyEntry, ApiKeys } from "./api-keys.ts";
export { apiKeyIdShape, createApiKeys, generateApiKey, hashApiKey } from "./api-keys.ts";
export type { Authenticator, Credentials } from "./authenticator.ts";
export { createAuthenticator } from "./authenticator.ts";
export type { AuthMethod, AuthReason, Caller, DenyReason } from "./caller.ts";
export { AuthError, denied, unauthenticated } from "./caller.ts";
export type { CallerLimits, CallerLimitsOptions, LimitKind } from "./caller-limits.ts";
export { createCallerLimits, LimitError } from "./caller-limits.ts";
export type { JwtIssuerConfig, JwtVerifier, VerifiedIdentity } from "./jwt-verifier.ts";
export { createJwtVerifier } from "./jwt-verifier.ts";
export type {
  AccessRequest,
  Allowed,
  Permission,
  Policy,
  PolicyRule,
  SessionScope,
} from "./policy.ts";
export { createPolicy, permissions } from "./policy.ts";
