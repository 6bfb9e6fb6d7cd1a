// The security parts of a replica, assembled from config: the audit sink, the
// listeners' authenticate hook (authenticator + an audit record per refusal),
// the policy and session-JWT verifier the TokenService guard uses, TLS files,
// and the upstream client wrapped so refreshes and revocations at providers
// are audited. Nothing here when the config turns it off.

import { type AuditSink, createAuditSink } from "./audit/index.ts";
import {
  AuthError,
  type Caller,
  createApiKeys,
  createAuthenticator,
  createJwtVerifier,
  createPolicy,
  type JwtVerifier,
  type Policy,
} from "./auth/index.ts";
import type { Config } from "./config.ts";
import type { FlowUpstream } from "./core/flow-upstream.ts";
import type { Logger } from "./core/logger.ts";
import type { UpstreamClient } from "./core/upstream.ts";
import { toConnectError } from "./rpc/error-mapping.ts";
import { sessionJwtHeader } from "./rpc/session-jwt.ts";
import { type Authenticate, type TlsFiles, watchTlsFiles } from "./transport/index.ts";

export interface Security {
  readonly audit: AuditSink | undefined;
  readonly authenticate: Authenticate | undefined;
  readonly policy: Policy | undefined;
  readonly sessionJwts: JwtVerifier | undefined;
  readonly tls: TlsFiles | undefined;
  /** The config load (its digest) and the keyring in use, to the audit stream. */
  recordStart(configDigest: string | undefined): void;
  /** `upstream` with every refresh and revocation at a provider audited. */
  audited(upstream: UpstreamClient): UpstreamClient;
  /** The flows' provider calls that obtain tokens (a login, an exchange) audited. */
  auditedFlows(upstream: FlowUpstream): FlowUpstream;
  close(): Promise<void>;
}

export interface SecurityOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly now: () => number;
  /** For JWKS and discovery requests (tests); default the global fetch. */
  readonly fetch?: typeof fetch;
}

/** The encryption key ids in use, primary first: ids only, never key material. */
export function keyIdsOf(config: Config): string[] {
  // "id:base64" entries, and key files named by their id.
  return [
    ...(config.encryptionKeys ?? "").split(",").map((e) => e.split(":")[0]?.trim() ?? ""),
    ...config.encryptionKeyFiles.map((f) => f.split("/").at(-1) ?? ""),
  ].filter(Boolean);
}

/** The audit sink the config asks for, if any. */
export function auditSinkOf(config: Config, log: Logger, now: () => number): AuditSink | undefined {
  return config.audit !== undefined
    ? createAuditSink({
        ...config.audit,
        now,
        onError: (err) =>
          log.error(
            { err: err instanceof Error ? err.message : String(err) },
            "audit write failed",
          ),
      })
    : undefined;
}

export function createSecurity(opts: SecurityOptions): Security {
  const { config, logger: log, now } = opts;
  const audit = auditSinkOf(config, log, now);
  const fetchOpt = opts.fetch !== undefined ? { fetch: opts.fetch } : {};
  const auth = config.auth;
  let authenticate: Authenticate | undefined;
  let policy: Policy | undefined;
  if (auth.enabled) {
    const authenticator = createAuthenticator({
      jwt:
        auth.jwtIssuers.length > 0
          ? createJwtVerifier({
              issuers: auth.jwtIssuers,
              cacheEntries: auth.jwtCacheEntries,
              now,
              ...fetchOpt,
            })
          : undefined,
      apiKeys: auth.apiKeys !== undefined ? createApiKeys(auth.apiKeys, now) : undefined,
      mtls: auth.mtls,
    });
    policy = createPolicy(config.policy);
    authenticate = async (req): Promise<Caller> => {
      try {
        const caller = await authenticator.authenticate({
          authorization: req.header("authorization"),
          get certificate() {
            return req.certificate;
          },
          peer: req.peer,
        });
        const sessionJwt = req.header(sessionJwtHeader);
        return sessionJwt !== undefined ? { ...caller, sessionJwt } : caller;
      } catch (err) {
        const e = err instanceof AuthError ? err : undefined;
        // Not a refusal but a fault: refused all the same (closed), and logged.
        if (e === undefined) {
          log.error(
            { err: err instanceof Error ? err.message : String(err) },
            "authentication failed unexpectedly",
          );
        }
        // A refusal is recorded even when the audit cannot be written: the call is refused anyway.
        try {
          audit?.write({
            event: "call",
            peer: req.peer,
            rpc: req.path.slice(1),
            decision: "deny",
            reason: e?.reason ?? "INTERNAL",
            outcome: e?.code ?? "UNAUTHENTICATED",
          });
        } catch {}
        throw toConnectError(
          e ??
            new AuthError("UNAUTHENTICATED", "MALFORMED_CREDENTIALS", "authentication failed", {
              cause: err,
            }),
        );
      }
    };
  }
  if (authenticate === undefined && config.limits.callers.enabled) {
    // No authentication, per-caller limits on: the caller is the peer (rpc/access-limits.ts).
    authenticate = async (req): Promise<Caller> => ({
      id: "anonymous",
      method: "none",
      peer: req.peer,
    });
  }
  const sessionJwts =
    auth.sessionJwtIssuers.length > 0
      ? createJwtVerifier({
          issuers: auth.sessionJwtIssuers,
          cacheEntries: auth.jwtCacheEntries,
          now,
          ...fetchOpt,
        })
      : undefined;
  const tls =
    config.tls !== undefined
      ? watchTlsFiles({
          ...config.tls,
          onError: (err) =>
            log.warn(
              { err: err instanceof Error ? err.message : String(err) },
              "TLS files changed but cannot be used; keeping the previous ones",
            ),
          onReload: () => log.info({}, "TLS certificate reloaded"),
        })
      : undefined;

  type ProviderEvent = "refresh" | "revocation" | "login" | "exchange";
  const record = (event: ProviderEvent, provider: string, grantType: string, outcome: string) => {
    try {
      audit?.write({ event, provider, outcome, details: { grantType } });
    } catch {
      // Background work: the failure is already in the service log (onError) or the caller's refusal.
    }
  };
  const track = async <T>(
    event: ProviderEvent,
    provider: string,
    grantType: string,
    work: Promise<T>,
  ) => {
    try {
      const v = await work;
      record(event, provider, grantType, "OK");
      return v;
    } catch (err) {
      const code = (err as { oauthError?: unknown }).oauthError;
      // A device poll that is told to wait is not an outcome.
      if (code === "authorization_pending" || code === "slow_down") throw err;
      record(event, provider, grantType, typeof code === "string" ? code : "FAILED");
      throw err;
    }
  };
  return {
    recordStart(configDigest) {
      const ids = keyIdsOf(config);
      try {
        audit?.write({
          event: "config",
          outcome: "OK",
          details: {
            ...(configDigest !== undefined ? { sha256: configDigest } : {}),
            auth: config.auth.enabled,
            rules: config.policy.length,
          },
        });
        if (ids.length > 0) {
          audit?.write({
            event: "keyring",
            outcome: "OK",
            details: { primary: ids[0] as string, keyIds: ids },
          });
        }
      } catch (err) {
        log.error({ err: err instanceof Error ? err.message : String(err) }, "audit write failed");
      }
    },
    audit,
    authenticate,
    policy,
    sessionJwts,
    tls,
    audited: (u) =>
      audit === undefined
        ? u
        : {
            clientCredentials: (p, req) =>
              track("refresh", p, "client_credentials", u.clientCredentials(p, req)),
            refresh: (p, req) => track("refresh", p, "refresh_token", u.refresh(p, req)),
            revoke: (p, req) => track("revocation", p, req.tokenTypeHint, u.revoke(p, req)),
          },
    auditedFlows: (u) =>
      audit === undefined
        ? u
        : {
            ...u,
            redeemCode: (p, req) => track("login", p, "authorization_code", u.redeemCode(p, req)),
            pollDevice: (p, req) => track("login", p, "device_code", u.pollDevice(p, req)),
            exchange: (p, req) => track("exchange", p, "token_exchange", u.exchange(p, req)),
          },
    async close() {
      tls?.close();
      await audit?.close();
    },
  };
}
