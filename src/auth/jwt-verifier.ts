// Bearer JWTs from the configured issuers, verified with jose: signature against
// the issuer's key set (key-set.ts), issuer, audience, allowed algorithms, exp,
// nbf, maximum token age and clock tolerance. A Kubernetes projected
// service-account token is the first-class case: its sub
// (system:serviceaccount:NS:NAME) must agree with its kubernetes.io claims,
// and is the caller's identity. Another issuer may not mint such a subject.
// Verified tokens are remembered until they expire (a bounded LRU), so a
// caller that sends the same token on every call pays for the signature once.

import { decodeJwt, errors, type JWTPayload, jwtVerify } from "jose";
import { LRUCache } from "lru-cache";
import { AuthError, type Caller, unauthenticated } from "./caller.ts";
import { issuerFetch, type JsonFetch } from "./issuer-fetch.ts";
import { createKeySet, type KeySet } from "./key-set.ts";

export interface JwtIssuerConfig {
  readonly issuer: string;
  /** "kubernetes": service-account tokens; "oidc": any other issuer. */
  readonly kind: "kubernetes" | "oidc";
  readonly jwksUri?: string | undefined;
  readonly audiences: readonly string[];
  readonly algorithms: readonly string[];
  /** Tokens issued longer ago than this are refused (iat required). */
  readonly maxTokenAgeMs?: number | undefined;
  readonly clockToleranceMs: number;
  readonly jwksCooldownMs: number;
  readonly jwksMaxAgeMs: number;
  readonly jwksTimeoutMs: number;
  /** PEM of the CA the issuer's HTTPS certificate chains to (an in-cluster API server's). */
  readonly caPem?: string | undefined;
  /** A bearer token file sent when fetching discovery and keys (the API server wants one). */
  readonly tokenFile?: string | undefined;
}

export interface JwtVerifierOptions {
  readonly issuers: readonly JwtIssuerConfig[];
  /** Verified tokens remembered (LRU); 0 turns the cache off. */
  readonly cacheEntries: number;
  readonly now: () => number;
  readonly fetch?: JsonFetch;
}

export type VerifiedIdentity = Omit<Caller, "peer"> & {
  /** The verified claims (session JWTs carry tsid and client_id). */
  readonly claims: JWTPayload;
};

export interface JwtVerifier {
  verify(token: string): Promise<VerifiedIdentity>;
  /** Key set fetches per issuer. */
  fetches(issuer: string): number;
}

const serviceAccount = /^system:serviceaccount:([^:]+):([^:]+)$/;
/** The shapes of the other kinds of caller id (api-key:ID, spiffe://…, CN=…,O=…), and system:. */
const otherKind = /^(?:api-key:|spiffe:\/\/|system:|[A-Za-z][A-Za-z0-9.]*=)/i;

export function createJwtVerifier(opts: JwtVerifierOptions): JwtVerifier {
  const byIssuer = new Map<string, { cfg: JwtIssuerConfig; keys: KeySet }>();
  for (const cfg of opts.issuers) {
    byIssuer.set(cfg.issuer, {
      cfg,
      keys: createKeySet({
        issuer: cfg.issuer,
        jwksUri: cfg.jwksUri,
        cooldownMs: cfg.jwksCooldownMs,
        maxAgeMs: cfg.jwksMaxAgeMs,
        timeoutMs: cfg.jwksTimeoutMs,
        now: opts.now,
        fetch:
          opts.fetch ??
          (cfg.caPem !== undefined || cfg.tokenFile !== undefined
            ? issuerFetch({
                ca: cfg.caPem,
                tokenFile: cfg.tokenFile,
                tokenOrigins: [cfg.issuer, cfg.jwksUri].flatMap((u) =>
                  u !== undefined && URL.canParse(u) ? [new URL(u).origin] : [],
                ),
              })
            : undefined),
      }),
    });
  }
  const cache =
    opts.cacheEntries > 0
      ? new LRUCache<string, VerifiedIdentity & { validUntil: number }>({ max: opts.cacheEntries })
      : undefined;

  const verifyUncached = async (token: string) => {
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch (err) {
      throw unauthenticated("MALFORMED_CREDENTIALS", "the bearer token is not a JWT", err);
    }
    const issuer = typeof iss === "string" ? byIssuer.get(iss) : undefined;
    if (issuer === undefined) {
      throw unauthenticated("UNTRUSTED_ISSUER", "the token's issuer is not a configured one");
    }
    const { cfg, keys } = issuer;
    let payload: Awaited<ReturnType<typeof jwtVerify>>["payload"];
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: cfg.issuer,
        audience: [...cfg.audiences],
        algorithms: [...cfg.algorithms],
        clockTolerance: cfg.clockToleranceMs / 1000,
        currentDate: new Date(opts.now()),
        requiredClaims: ["exp", "sub", ...(cfg.maxTokenAgeMs !== undefined ? ["iat"] : [])],
        ...(cfg.maxTokenAgeMs !== undefined ? { maxTokenAge: cfg.maxTokenAgeMs / 1000 } : {}),
      }));
    } catch (err) {
      throw classify(err, cfg.issuer);
    }
    const sub = payload.sub as string;
    const sa = serviceAccount.exec(sub);
    if (cfg.kind === "kubernetes") {
      const k = payload["kubernetes.io"] as
        | { namespace?: unknown; serviceaccount?: { name?: unknown } }
        | undefined;
      if (sa === null || k?.namespace !== sa[1] || k?.serviceaccount?.name !== sa[2]) {
        throw unauthenticated(
          "INVALID_CLAIMS",
          "a service-account token needs sub system:serviceaccount:NS:NAME matching its kubernetes.io claims",
        );
      }
    } else if (sa !== null || otherKind.test(sub)) {
      // Caller ids share one namespace with API keys, SPIFFE ids and certificate subjects: an
      // OIDC subject shaped like one of them would match rules written for it.
      throw unauthenticated(
        "INVALID_CLAIMS",
        `issuer ${cfg.issuer} is not a Kubernetes issuer and may not name a service account, an API key, a SPIFFE id or a certificate subject`,
      );
    }
    const expiresAt = (payload.exp as number) * 1000;
    const ageLimit =
      cfg.maxTokenAgeMs !== undefined
        ? (payload.iat as number) * 1000 + cfg.maxTokenAgeMs
        : expiresAt;
    return {
      id: sub,
      method: "jwt" as const,
      issuer: cfg.issuer,
      expiresAt,
      claims: payload,
      validUntil: Math.min(expiresAt, ageLimit) + cfg.clockToleranceMs,
    };
  };

  return {
    async verify(token) {
      const hit = cache?.get(token);
      if (hit !== undefined) {
        if (opts.now() < hit.validUntil) return hit;
        cache?.delete(token);
      }
      const v = await verifyUncached(token);
      cache?.set(token, v);
      return v;
    },
    fetches: (issuer) => byIssuer.get(issuer)?.keys.fetches ?? 0,
  };
}

/** jose's verification errors as stable reasons. */
function classify(err: unknown, issuer: string): Error {
  if (err instanceof AuthError) return err;
  if (err instanceof errors.JWTExpired) {
    return unauthenticated("TOKEN_EXPIRED", "the token has expired or is too old", err);
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    const reason =
      err.claim === "aud"
        ? "WRONG_AUDIENCE"
        : err.claim === "nbf"
          ? "TOKEN_NOT_YET_VALID"
          : err.claim === "iss"
            ? "UNTRUSTED_ISSUER"
            : "INVALID_CLAIMS";
    return unauthenticated(reason, `the token's "${err.claim}" claim is not acceptable`, err);
  }
  if (
    err instanceof errors.JWSSignatureVerificationFailed ||
    err instanceof errors.JOSEAlgNotAllowed
  ) {
    return unauthenticated(
      "BAD_SIGNATURE",
      `the token's signature does not verify with a key of ${issuer}`,
      err,
    );
  }
  if (err instanceof errors.JWKSMultipleMatchingKeys || err instanceof errors.JWKSNoMatchingKey) {
    return unauthenticated("UNKNOWN_KEY", `no key of ${issuer} has this key id`, err);
  }
  return unauthenticated("MALFORMED_CREDENTIALS", "the bearer token is malformed", err);
}
