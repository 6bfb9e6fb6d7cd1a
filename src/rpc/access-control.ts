// Policy and audit for every TokenService call, in one place, around the
// handlers (not an interceptor: the gRPC listener's hot path and its push
// streams run none). Each method's descriptor names its permission; the
// request names the provider, grant and session it touches. The caller the
// listener authenticated must be allowed by a policy rule (deny by default);
// the rule decides whose sessions it reaches, which the core checks against
// the owner sealed in each session (access.ts). A caller may name a session
// by the end user's session JWT (header tokenvend-session-jwt): its tsid is
// the session of every method that names one, its client_id must match the
// stored binding. One audit record
// per call, written before the answer leaves (with failClosed, a record that
// cannot be written fails the call); a stream gets one when it opens and one
// when it ends, and ends when the caller's credential expires.

import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type {
  GetAllUpstreamCredentialsResponse,
  TokenService,
  WatchTokenRequest,
  WatchTokenResponse,
} from "../../gen/tokenvend/v1/token_service_pb.js";
import { pushStream, pushStreamOf, type StreamSink } from "../transport/index.ts";
import {
  type AccessControlOptions,
  auditUnavailable,
  createGuard,
  outcomeOf,
  type Target,
} from "./access-guard.ts";
import { boundExchange, exchangeAccessTarget, guardFlowMethods } from "./flow-access.ts";
import { boundClient, boundTarget, sessionId } from "./session-jwt.ts";
import { expiringSink, generationOfCredential } from "./stream-expiry.ts";

type Impl = ServiceImpl<typeof TokenService>;

export function guardTokenService(impl: Impl, opts: AccessControlOptions): Impl {
  const guard = createGuard(opts);
  const { decide, unary, withAccess, record, tryRecord } = guard;
  const inner = impl;
  const innerWatch = pushStreamOf(inner.watchToken);
  if (innerWatch === undefined) throw new Error("watchToken must be written with pushStream()");

  return {
    async storeUpstreamTokens(req, ctx) {
      const t = { provider: req.provider, sessionId: req.sessionId };
      const d = await decide(ctx, "StoreUpstreamTokens", t);
      t.sessionId = sessionId(req.sessionId, d.session);
      const r =
        d.session === undefined
          ? req
          : { ...req, sessionId: t.sessionId, clientId: boundClient(req.clientId, d.session) };
      return unary(
        ctx,
        "StoreUpstreamTokens",
        t,
        d,
        () => inner.storeUpstreamTokens(r, withAccess(ctx, d.access)),
        (r) => Number(r.generation),
      );
    },
    async getValidTokens(req, ctx) {
      const t: Target = { provider: req.provider, sessionId: req.sessionId };
      const d = await decide(ctx, "GetValidTokens", t);
      const r = boundTarget(req, d.session);
      t.sessionId = r.sessionId;
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
      const rule = d.allowed;
      const access = {
        ...d.access,
        ...(d.session?.clientId !== undefined ? { expectedClientId: d.session.clientId } : {}),
        ...(rule !== undefined ? { providers: (p: string) => rule.providerAllowed(p) } : {}),
      };
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
            : req.target.case === "exchange"
              ? exchangeAccessTarget(req.target.value)
              : { grant: req.target.case === "grant" ? req.target.value : undefined };
        const open = async () => {
          const d = await decide(ctx, "WatchToken", t);
          if (ctx.signal.aborted) return sink.end();
          let r = req;
          if (s !== undefined && d.session !== undefined) {
            const value = boundTarget(s, d.session);
            t.sessionId = value.sessionId;
            r = { ...req, target: { case: "session", value } };
          } else if (req.target.case === "exchange") {
            const value = boundExchange(req.target.value, d.session, t);
            if (value !== undefined) r = { ...req, target: { case: "exchange", value } };
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
    ...guardFlowMethods(impl, guard),
  };
}
