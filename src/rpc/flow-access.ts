// Policy and audit for the flows tokenvend runs (StartAuthorization,
// CompleteAuthorization, StartDeviceAuthorization, ExchangeToken), through the
// same guard as every other call (access-guard.ts). A login started by a caller
// stores its session as that caller's (or its rule's tenant's); completing it
// is that caller's alone (the state is checked in the core, since only the
// state names the provider). An exchanged token is read as its subject is:
// another owner's session is NOT_OWNER. A session JWT names the session every
// one of them touches (session-jwt.ts).

import type { ServiceImpl } from "@connectrpc/connect";
import type { ExchangeTarget, TokenService } from "../../gen/tokenvend/v1/token_service_pb.js";
import type { Guard, Target } from "./access-guard.ts";
import { boundTarget, type SessionOfJwt, sessionId } from "./session-jwt.ts";
import { generationOfCredential } from "./stream-expiry.ts";

type Impl = ServiceImpl<typeof TokenService>;
type FlowImpl = Pick<
  Impl,
  "startAuthorization" | "completeAuthorization" | "startDeviceAuthorization" | "exchangeToken"
>;

/** What an exchange touches: its subject's session or grant. */
export function exchangeAccessTarget(x: ExchangeTarget | undefined): Target {
  const s = x?.subject;
  if (s?.case === "session") return { provider: s.value.provider, sessionId: s.value.sessionId };
  return { grant: s?.case === "grant" ? s.value : undefined };
}

/** The exchange as the session JWT names its subject session; `t` follows. */
export function boundExchange(
  x: ExchangeTarget | undefined,
  session: SessionOfJwt | undefined,
  t: Target,
): ExchangeTarget | undefined {
  if (session === undefined || x?.subject.case !== "session") return x;
  const value = boundTarget(x.subject.value, session);
  t.sessionId = value.sessionId;
  return { ...x, subject: { case: "session", value } };
}

export function guardFlowMethods(inner: Impl, guard: Guard): FlowImpl {
  const { decide, unary, withAccess } = guard;
  return {
    async startAuthorization(req, ctx) {
      const t: Target = { provider: req.provider, sessionId: req.sessionId };
      const d = await decide(ctx, "StartAuthorization", t);
      t.sessionId = sessionId(req.sessionId, d.session);
      const r = { ...req, sessionId: t.sessionId };
      return unary(
        ctx,
        "StartAuthorization",
        t,
        d,
        () => inner.startAuthorization(r, withAccess(ctx, d.access)),
        () => undefined,
      );
    },
    async completeAuthorization(req, ctx) {
      const t: Target = {};
      const d = await decide(ctx, "CompleteAuthorization", t);
      return unary(
        ctx,
        "CompleteAuthorization",
        t,
        d,
        () => inner.completeAuthorization(req, withAccess(ctx, d.access)),
        (r) => Number(r.generation),
      );
    },
    async startDeviceAuthorization(req, ctx) {
      const t: Target = { provider: req.provider, sessionId: req.sessionId };
      const d = await decide(ctx, "StartDeviceAuthorization", t);
      t.sessionId = sessionId(req.sessionId, d.session);
      const r = { ...req, sessionId: t.sessionId };
      return unary(
        ctx,
        "StartDeviceAuthorization",
        t,
        d,
        () => inner.startDeviceAuthorization(r, withAccess(ctx, d.access)),
        () => undefined,
      );
    },
    async exchangeToken(req, ctx) {
      const t = exchangeAccessTarget(req.target);
      const d = await decide(ctx, "ExchangeToken", t);
      const r = { ...req, target: boundExchange(req.target, d.session, t) };
      return unary(
        ctx,
        "ExchangeToken",
        t,
        d,
        () => inner.exchangeToken(r, withAccess(ctx, d.access)),
        (r) => generationOfCredential(r.credential),
      );
    },
  };
}
