// Per-caller limits, knowing no RPC or listener: requests per second per caller and method,
// new sessions per second per caller (rate-limiter-flexible's in-memory fixed windows, one
// limiter per method, keyed by the caller), and concurrent streams per caller (a count, taken
// when a stream opens and given back when it ends). A caller over a limit gets a LimitError
// saying which limit and when to try again. Held in this replica's memory: a cluster of N
// replicas lets a caller N times the rates, each replica keeping its own share.

import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";

export type LimitKind = "rate" | "streams" | "sessions";

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
}

export interface CallerLimits {
  /** Counts one call of `method` by `caller`; rejects with a LimitError beyond its rate. */
  call(caller: string, method: string): Promise<void>;
  /** Counts a new session stored or started by `caller`; rejects with a LimitError beyond the rate. */
  newSession(caller: string): Promise<void>;
  /** Takes one of the caller's stream slots (LimitError when none is left); returns its release. */
  openStream(caller: string): () => void;
  /** Streams open per caller, for tests and stats. */
  streams(caller: string): number;
}

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
  const open = new Map<string, number>();

  const refused = (kind: LimitKind, what: string) => (res: unknown) => {
    if (!(res instanceof RateLimiterRes)) throw res;
    const waitMs = Math.max(1, res.msBeforeNext);
    throw new LimitError(kind, `too many ${what}; try again in ${waitMs} ms`, waitMs);
  };

  return {
    call(caller, method) {
      return limiterOf(method)
        .consume(caller)
        .then(() => undefined, refused("rate", `${method} calls from this caller per second`));
    },
    newSession(caller) {
      return sessions
        .consume(caller)
        .then(() => undefined, refused("sessions", "new sessions from this caller per second"));
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
  };
}
