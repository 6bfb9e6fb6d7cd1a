// Per-caller limits, knowing no RPC or listener: requests per second per caller and method,
// new sessions per second per caller (rate-limiter-flexible's in-memory fixed windows, one
// limiter per method, keyed by the caller), and concurrent streams per caller (a count, taken
// when a stream opens and given back when it ends). A caller over a limit gets a LimitError
// saying which limit and when to try again. Held in this replica's memory: a cluster of N
// replicas lets a caller N times the rates, each replica keeping its own share.
//
// A refusal is held before it is answered: for a random time between its retry delay and twice
// that, at most `refusalHoldMs`, and with at most `maxHeldRefusals` held at once (more are
// answered at once). A client that retries as soon as it is refused (most floods: a fixed number
// of workers, each sending again on every answer) is then paced by its own refusals instead of
// taking the replica's event loop from everyone else; the jitter keeps the held clients from all
// coming back at the instant their window turns over. The retry delay answered is what is left
// of it after the hold.

import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";

export type LimitKind = "rate" | "streams" | "sessions" | "failures";

export class LimitError extends Error {
  override readonly name = "LimitError";
  readonly limit: LimitKind;
  /** When the caller may try again. */
  readonly retryAfterMs: number;

  constructor(limit: LimitKind, message: string, retryAfterMs: number) {
    // A refusal, not a fault: no stack (a flood of them must stay cheap).
    const stackLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = stackLimit;
    this.limit = limit;
    this.retryAfterMs = retryAfterMs;
  }
}

export interface CallerLimitsOptions {
  /** Per caller and method, unless `methods` names the method. */
  readonly requestsPerSecond: number;
  readonly methods: ReadonlyMap<string, number>;
  readonly maxStreams: number;
  readonly newSessionsPerSecond: number;
  /**
   * Calls a second that may fail by the caller's own mistake (failed() counts them: an unknown
   * session, an unreachable minimum validity, a denied RPC); beyond, every call of the caller is
   * refused until the second is over. 0: no such limit.
   */
  readonly failuresPerSecond: number;
  /** The longest a refusal is held before it is answered; 0 answers at once. */
  readonly refusalHoldMs: number;
  /** Refusals held at once, across callers; beyond, refusals are answered at once. */
  readonly maxHeldRefusals: number;
  /** In [0, 1): where in its range a refusal's hold falls (Math.random; tests fix it). */
  readonly random?: () => number;
}

export interface CallerLimits {
  /**
   * Counts one call of `method` by `caller`; rejects with a LimitError beyond its rate, held.
   * `timeLeft`: the time until the call's deadline, if it has one (a hold takes at most half of
   * it); asked only when the call is refused.
   */
  call(caller: string, method: string, timeLeft?: TimeLeft): Promise<void>;
  /** Counts a new session stored or started by `caller`; rejects (held) beyond the rate. */
  newSession(caller: string, timeLeft?: TimeLeft): Promise<void>;
  /** Counts a call of `caller` that failed by its own mistake (see failuresPerSecond). */
  failed(caller: string): void;
  /** Takes one of the caller's stream slots (LimitError when none is left); returns its release. */
  openStream(caller: string): () => void;
  /** Streams open per caller, for tests and stats. */
  streams(caller: string): number;
  /** Holds a LimitError as the limits hold their own refusals; rejects with what to answer. */
  hold(refusal: LimitError, timeLeft?: TimeLeft): Promise<never>;
  /** Refusals being held now. */
  held(): number;
}

/** Milliseconds until a call's deadline; undefined without one. */
export type TimeLeft = () => number | undefined;

const retryText = (ms: number) => `try again in ${ms} ms`;

// Streams cannot be counted again from the library's windows; how long a refused caller waits.
const streamRetryMs = 1_000;

export function createCallerLimits(opts: CallerLimitsOptions): CallerLimits {
  const byMethod = new Map<string, RateLimiterMemory>();
  const limiterOf = (method: string) => {
    let l = byMethod.get(method);
    if (l === undefined) {
      l = new RateLimiterMemory({
        points: opts.methods.get(method) ?? opts.requestsPerSecond,
        duration: 1,
      });
      byMethod.set(method, l);
    }
    return l;
  };
  const sessions = new RateLimiterMemory({ points: opts.newSessionsPerSecond, duration: 1 });
  const failures =
    opts.failuresPerSecond > 0
      ? new RateLimiterMemory({ points: opts.failuresPerSecond, duration: 1 })
      : undefined;
  const failuresText =
    "failed calls from this caller per second (an unknown session, a refused request)";
  const open = new Map<string, number>();
  // Callers over their failures, and when their window ends (ms since the epoch): only such
  // callers are here, so a call reads it without waiting on the limiter.
  const failing = new Map<string, number>();
  const overFailures = (caller: string, res: RateLimiterRes) => {
    if ((failing.get(caller) ?? 0) > Date.now()) return;
    const until = Date.now() + res.msBeforeNext;
    failing.set(caller, until);
    setTimeout(() => {
      if (failing.get(caller) === until) failing.delete(caller);
    }, res.msBeforeNext).unref();
  };

  const random = opts.random ?? Math.random;
  let heldNow = 0;
  const hold = (refusal: LimitError, timeLeft?: TimeLeft): Promise<never> => {
    const wait = refusal.retryAfterMs;
    // A caller's deadline must not pass while held: it would read as the replica's slowness.
    const left = timeLeft?.() ?? Infinity;
    const ms = Math.min(opts.refusalHoldMs, left / 2, Math.round(wait * (1 + random())));
    if (ms < 1 || heldNow >= opts.maxHeldRefusals) return Promise.reject(refusal);
    heldNow++;
    return new Promise((_, reject) => {
      setTimeout(() => {
        heldNow--;
        const left = Math.max(1, wait - ms);
        const message = refusal.message.replace(retryText(wait), retryText(left));
        reject(new LimitError(refusal.limit, message, left));
      }, ms).unref();
    });
  };

  const refusal = (kind: LimitKind, what: string, waitMs: number, timeLeft?: TimeLeft) => {
    const wait = Math.max(1, Math.ceil(waitMs));
    return hold(new LimitError(kind, `too many ${what}; ${retryText(wait)}`, wait), timeLeft);
  };
  const refused = (kind: LimitKind, what: string, timeLeft?: TimeLeft) => (res: unknown) => {
    if (!(res instanceof RateLimiterRes)) throw res;
    return refusal(kind, what, res.msBeforeNext, timeLeft);
  };

  return {
    call(caller, method, timeLeft) {
      const until = failing.get(caller);
      if (until !== undefined && until > Date.now()) {
        return refusal("failures", failuresText, until - Date.now(), timeLeft);
      }
      return limiterOf(method)
        .consume(caller)
        .then(
          () => undefined,
          refused("rate", `${method} calls from this caller per second`, timeLeft),
        );
    },
    newSession(caller, timeLeft) {
      return sessions
        .consume(caller)
        .then(
          () => undefined,
          refused("sessions", "new sessions from this caller per second", timeLeft),
        );
    },
    failed(caller) {
      // The call that uses the last point closes the window to the caller's other calls.
      failures?.consume(caller).then(
        (res) => {
          if (res.remainingPoints <= 0) overFailures(caller, res);
        },
        (res: unknown) => {
          if (res instanceof RateLimiterRes) overFailures(caller, res);
        },
      );
    },
    openStream(caller) {
      const n = open.get(caller) ?? 0;
      if (n >= opts.maxStreams) {
        throw new LimitError(
          "streams",
          `this caller has ${n} streams open on this replica, its limit (limits.callers.maxStreams)`,
          streamRetryMs,
        );
      }
      open.set(caller, n + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (open.get(caller) ?? 1) - 1;
        if (left > 0) open.set(caller, left);
        else open.delete(caller);
      };
    },
    streams: (caller) => open.get(caller) ?? 0,
    hold,
    held: () => heldNow,
  };
}
