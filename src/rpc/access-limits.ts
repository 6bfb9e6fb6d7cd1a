// Per-caller limits around every TokenService method (auth/caller-limits.ts), outside the
// access control: requests per second per caller and RPC, concurrent WatchToken streams per
// caller, and new sessions per caller (a StoreUpstreamTokens that creates its key, counted by
// the core through newSessionKey; every StartAuthorization and StartDeviceAuthorization). The
// caller is the authenticated identity; without authentication, the peer's address (port
// left out: one client's connections are one caller), which the listeners' authenticate hook
// passes as an anonymous caller (security.ts). A call without a caller is not limited. Beyond a
// limit: RESOURCE_EXHAUSTED with ErrorInfo (RATE_LIMITED, TOO_MANY_STREAMS, TOO_MANY_SESSIONS,
// TOO_MANY_FAILURES: a caller whose calls keep failing by its own mistake, such as a flood of
// unknown session ids, is refused every call for the rest of the second)
// and RetryInfo, after the limits held the refusal (auth/caller-limits.ts: paced floods, not
// fast ones). Refusals are counted, not audited: a flood must not flood the audit stream.

import { Code, createContextKey, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type {
  TokenService,
  WatchTokenRequest,
  WatchTokenResponse,
} from "../../gen/tokenvend/v1/token_service_pb.js";
import { type Caller, type CallerLimits, LimitError, type LimitKind } from "../auth/index.ts";
import { TokenVendError } from "../core/errors.ts";
import {
  type Authenticate,
  authenticatedKey,
  pushStream,
  pushStreamOf,
  type StreamSink,
} from "../transport/index.ts";
import { codeOf, toConnectError } from "./error-mapping.ts";

type Impl = ServiceImpl<typeof TokenService>;

/** What the core calls before it stores a session's first generation; rejects beyond the limit. */
export const newSessionKey = createContextKey<(() => Promise<void>) | undefined>(undefined, {
  description: "counts a new session against its caller's limit",
});

export interface AccessLimitsOptions {
  readonly limits: CallerLimits;
  readonly onRefused?: (limit: LimitKind, method: string) => void;
  /** The listeners' authenticate hook counts the rate (rateLimitedHook): not again here. */
  readonly rateInHook?: boolean;
}

const reasons: Record<LimitKind, string> = {
  rate: "RATE_LIMITED",
  streams: "TOO_MANY_STREAMS",
  sessions: "TOO_MANY_SESSIONS",
  failures: "TOO_MANY_FAILURES",
};

/** What a caller gets for its own mistakes: counted against limits.callers.failuresPerSecond. */
const mistakes = new Set<Code>([
  Code.InvalidArgument,
  Code.NotFound,
  Code.FailedPrecondition,
  Code.PermissionDenied,
]);

/** The limits' key of a call's caller: its id, or "peer:ADDRESS" without authentication. */
export function callerKeyOf(ctx: HandlerContext): string | undefined {
  return callerKey(ctx.values.get(authenticatedKey) as Caller | undefined);
}

/** The limits' key of a caller: its id, or "peer:ADDRESS" without authentication. */
function callerKey(c: Caller | undefined): string | undefined {
  if (c === undefined) return undefined;
  if (c.method !== "none") return c.id;
  const port = c.peer.lastIndexOf(":");
  return `peer:${port > 0 ? c.peer.slice(0, port) : c.peer}`;
}

/** A LimitError as the caller's answer: RESOURCE_EXHAUSTED with its reason and retry delay. */
function refusalOf(
  opts: Pick<AccessLimitsOptions, "onRefused">,
  method: string,
): (err: unknown) => never {
  return (err) => {
    if (!(err instanceof LimitError)) throw err;
    opts.onRefused?.(err.limit, method);
    throw new TokenVendError("RESOURCE_EXHAUSTED", err.message, {
      cause: err,
      reason: reasons[err.limit],
      retryAfterMs: err.retryAfterMs,
      metadata: { limit: err.limit, rpc: method },
    });
  };
}

/**
 * The listeners' authenticate hook with the per-caller request rate counted in it: a caller over
 * its rate is refused before its request body is read or decoded (a flood of refused
 * StoreUpstreamTokens bodies was most of a replica's garbage under abuse).
 */
export function rateLimitedHook(
  authenticate: Authenticate,
  opts: Pick<AccessLimitsOptions, "limits" | "onRefused">,
  servicePrefix: string,
): Authenticate {
  return async (req) => {
    const caller = await authenticate(req);
    const key = callerKey(caller as Caller | undefined);
    if (key !== undefined && req.path.startsWith(servicePrefix)) {
      const method = req.path.slice(servicePrefix.length);
      await opts.limits
        .call(key, method, () => req.timeoutMs())
        .catch(refusalOf(opts, method))
        .catch((refused: unknown) => {
          throw toConnectError(refused);
        });
    }
    return caller;
  };
}

export function limitTokenService(impl: Impl, opts: AccessLimitsOptions): Impl {
  const { limits } = opts;
  const refusal = (method: string) => refusalOf(opts, method);
  const rate = (caller: string, method: string, ctx: HandlerContext) =>
    opts.rateInHook ? Promise.resolve() : limits.call(caller, method, () => ctx.timeoutMs());
  const limited = <K extends Exclude<keyof Impl, "watchToken">>(
    name: K,
    method: string,
    before?: (caller: string, ctx: HandlerContext) => Promise<void>,
  ): Impl[K] => {
    const inner = impl[name] as (req: unknown, ctx: HandlerContext) => unknown;
    return (async (req: unknown, ctx: HandlerContext) => {
      const caller = callerKeyOf(ctx);
      if (caller === undefined) return inner(req, ctx);
      await rate(caller, method, ctx).catch(refusal(method));
      await before?.(caller, ctx);
      try {
        return await inner(req, ctx);
      } catch (err) {
        if (mistakes.has(codeOf(err))) limits.failed(caller);
        throw err;
      }
    }) as unknown as Impl[K];
  };
  const countSession = (method: string) => (caller: string, ctx: HandlerContext) =>
    limits.newSession(caller, () => ctx.timeoutMs()).catch(refusal(method));
  const innerWatch = pushStreamOf(impl.watchToken);
  if (innerWatch === undefined) throw new Error("watchToken must be written with pushStream()");

  return {
    storeUpstreamTokens: limited(
      "storeUpstreamTokens",
      "StoreUpstreamTokens",
      async (caller, ctx) => {
        const count = countSession("StoreUpstreamTokens");
        ctx.values.set(newSessionKey, () => count(caller, ctx));
      },
    ),
    getValidTokens: limited("getValidTokens", "GetValidTokens"),
    getAllUpstreamCredentials: limited("getAllUpstreamCredentials", "GetAllUpstreamCredentials"),
    getToken: limited("getToken", "GetToken"),
    revokeSession: limited("revokeSession", "RevokeSession"),
    startAuthorization: limited(
      "startAuthorization",
      "StartAuthorization",
      countSession("StartAuthorization"),
    ),
    completeAuthorization: limited("completeAuthorization", "CompleteAuthorization"),
    startDeviceAuthorization: limited(
      "startDeviceAuthorization",
      "StartDeviceAuthorization",
      countSession("StartDeviceAuthorization"),
    ),
    exchangeToken: limited("exchangeToken", "ExchangeToken"),
    watchToken: pushStream(
      (req: WatchTokenRequest, ctx: HandlerContext, sink: StreamSink<WatchTokenResponse>) => {
        const caller = callerKeyOf(ctx);
        if (caller === undefined) return innerWatch(req, ctx, sink);
        rate(caller, "WatchToken", ctx)
          .then(() => {
            const release = limits.openStream(caller);
            // A stream ends by its sink, or by its call's signal (the caller left, a drain).
            ctx.signal.addEventListener("abort", release, { once: true });
            innerWatch(req, ctx, {
              send: (m) => sink.send(m as WatchTokenResponse),
              end: (err) => {
                release();
                sink.end(err);
              },
            });
          })
          // A refused stream is held like the rates' refusals (caller-limits.ts).
          .catch((err: unknown) =>
            err instanceof LimitError && err.limit === "streams"
              ? limits.hold(err, () => ctx.timeoutMs())
              : Promise.reject(err),
          )
          .catch(refusal("WatchToken"))
          .catch((err: unknown) => sink.end(err));
      },
    ),
  };
}
