// Who is calling, as authentication proved it, and the one error type of this
// folder. Reasons are stable strings: they travel as google.rpc.ErrorInfo
// reasons, so callers and tests can tell missing credentials from expired ones.

/** How a caller proved who it is. "none" only when authentication is off. */
export type AuthMethod = "jwt" | "mtls" | "api-key" | "none";

export interface Caller {
  /** The identity policy rules match: a service account, a SPIFFE id, api-key:ID, ... */
  readonly id: string;
  readonly method: AuthMethod;
  /** The JWT's issuer, when it came from one. */
  readonly issuer?: string | undefined;
  /** When the credential stops being valid (wall-clock ms); streams end then. */
  readonly expiresAt?: number | undefined;
  /** The peer's address as the listener saw it. */
  readonly peer: string;
  /**
   * The end user's session JWT the call carried (header tokenvend-session-jwt),
   * read with the credentials, so the handler need not build the call's headers.
   */
  readonly sessionJwt?: string | undefined;
}

export const authReasons = [
  /** No Authorization header and no client certificate. */
  "MISSING_CREDENTIALS",
  /** Not a bearer token, not a JWT, not an API key: unreadable. */
  "MALFORMED_CREDENTIALS",
  /** The signature does not verify. */
  "BAD_SIGNATURE",
  /** The token names a key id the issuer's key set does not have (after a refresh). */
  "UNKNOWN_KEY",
  /** The issuer's key set could not be fetched and no cached key fits. */
  "JWKS_UNAVAILABLE",
  /** exp passed, nbf not yet, or older than maxTokenAge. */
  "TOKEN_EXPIRED",
  "TOKEN_NOT_YET_VALID",
  "WRONG_AUDIENCE",
  "UNTRUSTED_ISSUER",
  /** A claim this service needs is missing or malformed (sub, the kubernetes.io claims). */
  "INVALID_CLAIMS",
  "UNKNOWN_API_KEY",
  "API_KEY_EXPIRED",
  /** A client certificate without an identity this service can use. */
  "UNTRUSTED_CERTIFICATE",
] as const;

export type AuthReason = (typeof authReasons)[number];

export const denyReasons = [
  /** No policy rule names this caller. */
  "NO_RULE",
  /** Rules name the caller but none allows this method (or revoke_upstream). */
  "METHOD_NOT_ALLOWED",
  "PROVIDER_NOT_ALLOWED",
  "GRANT_NOT_ALLOWED",
  /** The session belongs to another owner. */
  "NOT_OWNER",
  /** The rule needs the end user's session JWT and none (or a bad one) came. */
  "SESSION_TOKEN_REQUIRED",
  "INVALID_SESSION_TOKEN",
] as const;

export type DenyReason = (typeof denyReasons)[number];

/**
 * A refused call: UNAUTHENTICATED (who you are is not proven), PERMISSION_DENIED
 * (proven, not allowed) or UNAVAILABLE (it cannot be proven now: an issuer's key
 * set cannot be fetched; a retry may succeed). Messages never hold a credential.
 */
export type AuthErrorCode = "UNAUTHENTICATED" | "PERMISSION_DENIED" | "UNAVAILABLE";

export class AuthError extends Error {
  override readonly name = "AuthError";
  readonly code: AuthErrorCode;
  readonly reason: AuthReason | DenyReason;
  /** The rule that decided, when one did. */
  readonly rule: string | undefined;

  constructor(
    code: AuthErrorCode,
    reason: AuthReason | DenyReason,
    message: string,
    opts: { rule?: string | undefined; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.code = code;
    this.reason = reason;
    this.rule = opts.rule;
  }
}

export const unauthenticated = (reason: AuthReason, message: string, cause?: unknown) =>
  new AuthError("UNAUTHENTICATED", reason, message, { cause });

/** An issuer's key set cannot be fetched and no cached key fits: not the caller's fault. */
export const keysUnavailable = (issuer: string, cause?: unknown) =>
  new AuthError("UNAVAILABLE", "JWKS_UNAVAILABLE", `the key set of ${issuer} is not available`, {
    cause,
  });

export const denied = (reason: DenyReason, message: string, rule?: string) =>
  new AuthError("PERMISSION_DENIED", reason, message, { rule });
