// The decision every guarded TokenService call goes through (access-control.ts,
// flow-access.ts): the authenticated caller, the first policy rule that allows
// the request (deny by default), whose sessions it reaches, an optional session
// JWT; and one audit record per call, written before the answer leaves (with
// failClosed, a record that cannot be written fails the call). With failClosed,
// a call that changes state is recorded as STARTED before it runs, so an audit
// that cannot be written refuses it before anything changed.

import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { trace } from "@opentelemetry/api";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
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
import { authenticatedKey } from "../transport/index.ts";
import { type Access, accessKey } from "./access.ts";
import { errorDomain, toConnectError } from "./error-mapping.ts";
import { grpcStatusNames } from "./rpc-interceptor.ts";
import { type SessionOfJwt, sessionOf } from "./session-jwt.ts";

export interface AccessControlOptions {
  /** Undefined: authentication is off; every call is allowed and nothing is owned. */
  readonly policy: Policy | undefined;
  /** Verifies end users' session JWTs; undefined: the header is refused. */
  readonly sessionJwts?: JwtVerifier | undefined;
  readonly audit?: AuditSink | undefined;
  readonly now: () => number;
}

/** What a request touches, as the policy and the audit record see it. */
export interface Target {
  provider?: string | undefined;
  grant?: string | undefined;
  sessionId?: string | undefined;
  revokeUpstream?: boolean | undefined;
}

export interface Decision {
  readonly caller: Caller | undefined;
  readonly allowed: Allowed | undefined;
  readonly access: Access;
  /** The session a session JWT named, and its client id. */
  readonly session?: SessionOfJwt;
}

/** The decision and audit steps the guarded methods share. */
export interface Guard {
  /** Authenticated caller, rule and session; throws (and audits) a refusal. */
  decide(ctx: HandlerContext, method: Permission, target: Target): Promise<Decision>;
  /** Runs a unary handler under a decision; audits its outcome before the answer leaves. */
  unary<R>(
    ctx: HandlerContext,
    method: Permission,
    target: Target,
    d: Decision,
    run: () => R | Promise<R>,
    generationOf: (r: R) => number | undefined,
  ): Promise<R>;
  /** The context the handler sees, carrying the decision's access. */
  withAccess(ctx: HandlerContext, access: Access): HandlerContext;
  record(
    ctx: HandlerContext,
    method: Permission,
    target: Target,
    d: Partial<Decision>,
    extra: Partial<AuditRecord>,
  ): void;
  /** record, whose failure is reported by the sink and changes nothing. */
  tryRecord(...args: Parameters<Guard["record"]>): void;
}

/** The calls that change what the store or a provider holds. */
const changesState: ReadonlySet<Permission> = new Set<Permission>([
  "StoreUpstreamTokens",
  "RevokeSession",
  "StartAuthorization",
  "CompleteAuthorization",
  "StartDeviceAuthorization",
]);

export function createGuard(opts: AccessControlOptions): Guard {
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
    const before = audit?.failClosed === true && changesState.has(method);
    if (before) {
      try {
        record(ctx, method, target, d, { decision: "allow", outcome: "STARTED" });
      } catch (err) {
        throw auditUnavailable(err);
      }
    }
    let res: R;
    try {
      res = await run();
    } catch (err) {
      tryRecord(ctx, method, target, d, { decision: "allow", ...outcomeOf(err) });
      throw err;
    }
    const done = { decision: "allow", outcome: "OK", generation: generationOf(res) } as const;
    if (before) {
      // It happened: refusing the answer now would only make the caller repeat it.
      tryRecord(ctx, method, target, d, done);
      return res;
    }
    try {
      record(ctx, method, target, d, done);
    } catch (err) {
      throw auditUnavailable(err);
    }
    return res;
  };

  return { decide, unary, withAccess, record, tryRecord };
}

/** How an operation ended, as the caller sees it: the status name and the ErrorInfo reason. */
export function outcomeOf(err: unknown): Pick<AuditRecord, "outcome" | "reason"> {
  const wire = toConnectError(err);
  return {
    outcome: grpcStatusNames[wire.code] ?? "UNKNOWN",
    reason: wire.findDetails(ErrorInfoSchema)[0]?.reason,
  };
}

export function auditUnavailable(err: unknown): ConnectError {
  return new ConnectError(
    "the audit record could not be written; the call is refused",
    Code.Unavailable,
    undefined,
    [{ desc: ErrorInfoSchema, value: { reason: "AUDIT_UNAVAILABLE", domain: errorDomain } }],
    err instanceof AuditUnavailableError ? err : new AuditUnavailableError("audit", { cause: err }),
  );
}
