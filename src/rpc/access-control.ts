// Policy and audit for every TokenService call, in one place, around the
// handlers (not an interceptor: the gRPC listener's hot path and its push
// streams run none). Each method's descriptor names its permission; the
// request names the provider, grant and session it touches. The caller the
// listener authenticated must be allowed by a policy rule (deny by default);
// the rule decides whose sessions it reaches, which the core checks against
// the owner sealed in each session (access.ts). A caller may name a session
// by the end user's session JWT (header tokenvend-session-jwt): its tsid is
// the session, its client_id must match the stored binding. One audit record
// per call, written before the answer leaves (with failClosed, a record that
// cannot be written fails the call); a stream gets one when it opens and one
// when it ends, and ends when the caller's credential expires.

import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { trace } from "@opentelemetry/api";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type {
  GetAllUpstreamCredentialsResponse,
  TokenService,
  WatchTokenRequest,
  WatchTokenResponse,
} from "../../gen/tokenvend/v1/token_service_pb.js";
import { type AuditRecord, type AuditSink, AuditUnavailableError } from "../audit/index.ts";
import {
  type AccessRequest,
  type Allowed,
  AuthError,
  type Caller,
  type JwtVerifier,
  type Permission,
  type Policy,
  unauthenticated,
} from "../auth/index.ts";
import { authenticatedKey, pushStream, pushStreamOf, type StreamSink } from "../transport/index.ts";
import { type Access, accessKey } from "./access.ts";
import { errorDomain, toConnectError } from "./error-mapping.ts";
import { grpcStatusNames } from "./rpc-interceptor.ts";
import { boundClient, type SessionOfJwt, sessionId, sessionOf } from "./session-jwt.ts";
import { expiringSink, generationOfCredential } from "./stream-expiry.ts";

export interface AccessControlOptions {
  /** Undefined: authentication is off; every call is allowed and nothing is owned. */
  readonly policy: Policy | undefined;
  /** Verifies end users' session JWTs; undefined: the header is refused. */
  readonly sessionJwts?: JwtVerifier | undefined;
  readonly audit?: AuditSink | undefined;
  readonly now: () => number;
}

type Impl = ServiceImpl<typeof TokenService>;

/** What a request touches, as the policy and the audit record see it. */
interface Target {
  provider?: string | undefined;
  grant?: string | undefined;
  sessionId?: string | undefined;
  revokeUpstream?: boolean | undefined;
}

interface Decision {
  readonly caller: Caller | undefined;
  readonly allowed: Allowed | undefined;
  readonly access: Access;
  /** The session a session JWT named, and its client id. */
  readonly session?: SessionOfJwt;
}

export function guardTokenService(impl: Impl, opts: AccessControlOptions): Impl {
  const { policy, audit } = opts;

  const record = (
    ctx: HandlerContext,
    method: Permission,
    target: Target,
    d: Partial<Decision>,
    extra: Partial<AuditRecord>,
  ) => {
    if (audit === undefined) return;
    const span = trace.getActiveSpan()?.spanContext();
    audit.write({
      event: "call",
      caller: d.caller?.id,
      authMethod: d.caller?.method ?? (policy === undefined ? "none" : undefined),
      peer: d.caller?.peer,
      rpc: `${ctx.service.typeName}/${method}`,
      provider: target.provider,
      grant: target.grant,
      sessionId: target.sessionId,
      rule: d.allowed?.rule,
      traceId: span?.traceId,
      ...extra,
    });
  };

  const tryRecord = (...args: Parameters<typeof record>) => {
    try {
      record(...args);
    } catch {
      // Reported by the sink; what is being recorded happens (or is refused) regardless.
    }
  };

  /** Authenticated caller, rule and session; throws (and audits) a refusal. */
  const decide = async (
    ctx: HandlerContext,
    method: Permission,
    target: Target,
  ): Promise<Decision> => {
    const caller = ctx.values.get(authenticatedKey) as Caller | undefined;
    try {
      if (policy === undefined) {
        // Authentication off: a session JWT is read only where session JWTs are configured.
        const session =
          opts.sessionJwts !== undefined
            ? await sessionOf(ctx, caller, undefined, opts.sessionJwts)
            : undefined;
        return {
          caller,
          allowed: undefined,
          access: { recordOwner: undefined, owner: undefined },
          ...(session ? { session } : {}),
        };
      }
      // The listener authenticated every call it let through: none here is a fault, refused.
      if (caller === undefined)
        throw unauthenticated("MISSING_CREDENTIALS", "this call needs credentials");
      const req: AccessRequest = {
        method,
        provider: target.provider,
        grant: target.grant,
        revokeUpstream: target.revokeUpstream,
      };
      const allowed = policy.authorize(caller, req);
      // Most calls carry no session JWT: no verification and no await for them.
      const session =
        caller.sessionJwt === undefined && allowed.sessions !== "token"
          ? undefined
          : await sessionOf(ctx, caller, allowed, opts.sessionJwts);
      const owner = allowed.sessions === "own" ? allowed.owner : undefined;
      return {
        caller,
        allowed,
        access: { recordOwner: allowed.owner, owner },
        ...(session ? { session } : {}),
      };
    } catch (err) {
      const e = err instanceof AuthError ? err : undefined;
      // Refused whether or not the refusal could be recorded.
      tryRecord(
        ctx,
        method,
        target,
        { caller },
        { decision: "deny", reason: e?.reason, rule: e?.rule, outcome: e?.code ?? "INTERNAL" },
      );
      throw err;
    }
  };

  const withAccess = (ctx: HandlerContext, access: Access): HandlerContext => {
    ctx.values.set(accessKey, access);
    return ctx;
  };

  /** Runs a unary handler under a decision; audits its outcome before the answer leaves. */
  const unary = async <R>(
    ctx: HandlerContext,
    method: Permission,
    target: Target,
    d: Decision,
    run: () => R | Promise<R>,
    generationOf: (r: R) => number | undefined,
  ): Promise<R> => {
    let res: R;
    try {
      res = await run();
    } catch (err) {
      tryRecord(ctx, method, target, d, { decision: "allow", ...outcomeOf(err) });
      throw err;
    }
    try {
      record(ctx, method, target, d, {
        decision: "allow",
        outcome: "OK",
        generation: generationOf(res),
      });
    } catch (err) {
      throw auditUnavailable(err);
    }
    return res;
  };

  const inner = impl;
  const innerWatch = pushStreamOf(inner.watchToken);
  if (innerWatch === undefined) throw new Error("watchToken must be written with pushStream()");

  return {
    async storeUpstreamTokens(req, ctx) {
      const t = { provider: req.provider, sessionId: req.sessionId };
      const d = await decide(ctx, "StoreUpstreamTokens", t);
      return unary(
        ctx,
        "StoreUpstreamTokens",
        t,
        d,
        () => inner.storeUpstreamTokens(req, withAccess(ctx, d.access)),
        (r) => Number(r.generation),
      );
    },
    async getValidTokens(req, ctx) {
      const t: Target = { provider: req.provider, sessionId: req.sessionId };
      const d = await decide(ctx, "GetValidTokens", t);
      const id = sessionId(req.sessionId, d.session);
      t.sessionId = id;
      const r =
        d.session === undefined
          ? req
          : {
              ...req,
              sessionId: id,
              expectedClientId: boundClient(req.expectedClientId, d.session),
            };
      return unary(
        ctx,
        "GetValidTokens",
        t,
        d,
        () => inner.getValidTokens(r, withAccess(ctx, d.access)),
        (x) => generationOfCredential(x.credential),
      );
    },
    async getAllUpstreamCredentials(req, ctx) {
      const t: Target = { sessionId: req.sessionId };
      const d = await decide(ctx, "GetAllUpstreamCredentials", t);
      t.sessionId = sessionId(req.sessionId, d.session);
      const access =
        d.session?.clientId !== undefined
          ? { ...d.access, expectedClientId: d.session.clientId }
          : d.access;
      // token-service.ts answers a whole message, which is filtered here.
      const res = (await unary(
        ctx,
        "GetAllUpstreamCredentials",
        t,
        d,
        () =>
          inner.getAllUpstreamCredentials(
            { ...req, sessionId: t.sessionId as string },
            withAccess(ctx, access),
          ),
        () => undefined,
      )) as GetAllUpstreamCredentialsResponse;
      // Only the providers the rule reaches.
      if (d.allowed !== undefined) {
        for (const p of Object.keys(res.credentials))
          if (!d.allowed.providerAllowed(p)) delete res.credentials[p];
        res.failures = res.failures.filter((f) => d.allowed?.providerAllowed(f.provider));
      }
      return res;
    },
    async getToken(req, ctx) {
      const t = { grant: req.grant };
      const d = await decide(ctx, "GetToken", t);
      return unary(
        ctx,
        "GetToken",
        t,
        d,
        () => inner.getToken(req, withAccess(ctx, d.access)),
        (x) => generationOfCredential(x.credential),
      );
    },
    async revokeSession(req, ctx) {
      // No provider: every provider of the session, which only a rule reaching "*" may revoke.
      const t: Target = {
        provider: req.provider || "*",
        sessionId: req.sessionId,
        revokeUpstream: req.revokeUpstream,
      };
      const d = await decide(ctx, "RevokeSession", t);
      t.sessionId = sessionId(req.sessionId, d.session);
      return unary(
        ctx,
        "RevokeSession",
        t,
        d,
        () =>
          inner.revokeSession(
            { ...req, sessionId: t.sessionId as string },
            withAccess(ctx, d.access),
          ),
        () => undefined,
      );
    },
    watchToken: pushStream(
      (req: WatchTokenRequest, ctx: HandlerContext, sink: StreamSink<WatchTokenResponse>) => {
        const s = req.target.case === "session" ? req.target.value : undefined;
        const t: Target =
          s !== undefined
            ? { provider: s.provider, sessionId: s.sessionId }
            : { grant: req.target.case === "grant" ? req.target.value : undefined };
        const open = async () => {
          const d = await decide(ctx, "WatchToken", t);
          if (ctx.signal.aborted) return sink.end();
          let r = req;
          if (s !== undefined && d.session !== undefined) {
            t.sessionId = sessionId(s.sessionId, d.session);
            const value = {
              ...s,
              sessionId: t.sessionId,
              expectedClientId: boundClient(s.expectedClientId, d.session),
            };
            r = { ...req, target: { case: "session", value } };
          }
          try {
            record(ctx, "WatchToken", t, d, { decision: "allow", outcome: "STREAMING" });
          } catch (err) {
            return sink.end(auditUnavailable(err));
          }
          const guarded = expiringSink(
            ctx,
            sink,
            d.caller?.expiresAt,
            opts.now,
            (err, generation) => {
              const outcome = err === undefined ? { outcome: "OK" } : outcomeOf(err);
              tryRecord(ctx, "WatchToken", t, d, { decision: "allow", ...outcome, generation });
            },
          );
          try {
            innerWatch(r, withAccess(ctx, d.access), guarded);
          } catch (err) {
            guarded.end(err);
          }
        };
        open().catch((err: unknown) => sink.end(err));
      },
    ),
  };
}

/** How an operation ended, as the caller sees it: the status name and the ErrorInfo reason. */
function outcomeOf(err: unknown): Pick<AuditRecord, "outcome" | "reason"> {
  const wire = toConnectError(err);
  return {
    outcome: grpcStatusNames[wire.code] ?? "UNKNOWN",
    reason: wire.findDetails(ErrorInfoSchema)[0]?.reason,
  };
}

function auditUnavailable(err: unknown): ConnectError {
  return new ConnectError(
    "the audit record could not be written; the call is refused",
    Code.Unavailable,
    undefined,
    [{ desc: ErrorInfoSchema, value: { reason: "AUDIT_UNAVAILABLE", domain: errorDomain } }],
    err instanceof AuditUnavailableError ? err : new AuditUnavailableError("audit", { cause: err }),
  );
}
