// What this replica sends a provider, bounded per provider: at most maxConcurrent requests at
// its endpoints at once, at most ratePerSecond started within any second, and none while a
// pause runs (a 429 or 503 with Retry-After pauses the provider for every key, capped at
// maxPauseMs). A request beyond those waits in the provider's queue, first in first out, under
// its own signal: a caller's request whose caller gives up leaves the queue; a shared refresh
// waits under the service's signal and keeps its place. The queue holds at most maxQueued;
// beyond it a request is shed at once (UPSTREAM_UNAVAILABLE, PROVIDER_OVERLOADED, with a wait).
//
// Where it applies (docs/ARCHITECTURE.md): the cluster refresh takes a slot before it claims a
// generation and gives it back when the provider answered, so a claim's lease never runs out in
// the queue; every other request (the flows, revocations) through limitedFlowUpstream and
// limitedRevocations. Time from the injected clock; a timer only while something waits.

import type { Clock, Timer } from "./clock.ts";
import { TokenVendError } from "./errors.ts";
import type { FlowUpstream } from "./flow-upstream.ts";
import { type UpstreamClient, UpstreamError } from "./upstream.ts";

export interface ProviderLimits {
  readonly maxConcurrent: number;
  readonly ratePerSecond: number;
  readonly maxQueued: number;
  /** The longest pause a Retry-After opens. */
  readonly maxPauseMs: number;
}

/** What happened to a request, for metrics. */
export type LimiterEvent =
  | { readonly kind: "started"; readonly provider: string; readonly waitedMs: number }
  | {
      readonly kind: "shed";
      readonly provider: string;
      readonly reason: "queue_full" | "abandoned";
    }
  | { readonly kind: "paused"; readonly provider: string; readonly ms: number };

export interface ProviderLimiterOptions {
  readonly clock: Clock;
  /** The limits of a provider (its own, or the defaults). */
  readonly limitsOf: (provider: string) => ProviderLimits;
  readonly onEvent?: ((e: LimiterEvent) => void) | undefined;
}

export type Release = (unused?: boolean) => void;

export interface ProviderUsage {
  readonly active: number;
  readonly queued: number;
  readonly pausedUntil: number;
}

export interface ProviderLimiter {
  /**
   * A slot for one request; call the release it resolves to once the provider answered, or
   * with `unused` when no request was sent after all (its start leaves the rate's window).
   */
  acquire(provider: string, signal: AbortSignal): Promise<Release>;
  /** Pauses every request to the provider for `ms` (capped at its maxPauseMs). */
  pause(provider: string, ms: number): void;
  /** Pauses the provider when `err` is a 429 or 503 that said when to come back. */
  observe(provider: string, err: unknown): void;
  /** Runs one request in a slot, observing its failure. */
  run<T>(provider: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T>;
  usage(): ReadonlyMap<string, ProviderUsage>;
}

interface Waiter {
  readonly since: number;
  readonly signal: AbortSignal;
  readonly grant: (release: Release) => void;
  gone: boolean;
}

interface State {
  readonly limits: ProviderLimits;
  active: number;
  /** Start instants within the last second, oldest first. */
  readonly starts: number[];
  readonly queue: Waiter[];
  queued: number;
  pausedUntil: number;
  timer: Timer | undefined;
  timerAt: number;
}

const windowMs = 1_000;

export function createProviderLimiter(opts: ProviderLimiterOptions): ProviderLimiter {
  const { clock } = opts;
  const states = new Map<string, State>();
  const emit = (e: LimiterEvent) => opts.onEvent?.(e);

  const stateOf = (provider: string): State => {
    let s = states.get(provider);
    if (s === undefined) {
      s = {
        limits: opts.limitsOf(provider),
        active: 0,
        starts: [],
        queue: [],
        queued: 0,
        pausedUntil: 0,
        timer: undefined,
        timerAt: 0,
      };
      states.set(provider, s);
    }
    return s;
  };

  /** When a request may start, or 0 now; Infinity: only a release frees a slot. */
  const readyAt = (s: State, now: number): number => {
    if (now < s.pausedUntil) return s.pausedUntil;
    if (s.active >= s.limits.maxConcurrent) return Number.POSITIVE_INFINITY;
    while (s.starts.length > 0 && (s.starts[0] as number) <= now - windowMs) s.starts.shift();
    if (s.starts.length >= s.limits.ratePerSecond) return (s.starts[0] as number) + windowMs;
    return 0;
  };

  const start = (provider: string, s: State, now: number): Release => {
    s.active++;
    s.starts.push(now);
    let released = false;
    return (unused) => {
      if (released) return;
      released = true;
      s.active--;
      if (unused === true) {
        const i = s.starts.lastIndexOf(now);
        if (i >= 0) s.starts.splice(i, 1);
      }
      pump(provider, s);
    };
  };

  const wakeAt = (provider: string, s: State, at: number) => {
    if (s.timer !== undefined && s.timerAt <= at) return;
    s.timer?.cancel();
    s.timerAt = at;
    s.timer = clock.setTimer(at - clock.now(), () => {
      s.timer = undefined;
      pump(provider, s);
    });
  };

  const pump = (provider: string, s: State) => {
    for (;;) {
      while (s.queue.length > 0 && (s.queue[0] as Waiter).gone) s.queue.shift();
      const w = s.queue[0];
      if (w === undefined) return;
      const now = clock.now();
      const at = readyAt(s, now);
      if (at === Number.POSITIVE_INFINITY) return;
      if (at > 0) return wakeAt(provider, s, at);
      s.queue.shift();
      s.queued--;
      w.gone = true;
      emit({ kind: "started", provider, waitedMs: now - w.since });
      w.grant(start(provider, s, now));
    }
  };

  const pause = (provider: string, ms: number) => {
    const s = stateOf(provider);
    const capped = Math.min(Math.max(0, ms), s.limits.maxPauseMs);
    const until = clock.now() + capped;
    if (until <= s.pausedUntil) return;
    s.pausedUntil = until;
    emit({ kind: "paused", provider, ms: capped });
    pump(provider, s);
  };

  const observe = (provider: string, err: unknown) => {
    if (
      err instanceof UpstreamError &&
      (err.status === 429 || err.status === 503) &&
      err.retryAfterMs !== undefined
    ) {
      pause(provider, err.retryAfterMs);
    }
  };

  const acquire = (provider: string, signal: AbortSignal): Promise<Release> => {
    if (signal.aborted) return Promise.reject(signal.reason);
    const s = stateOf(provider);
    const now = clock.now();
    if (s.queued === 0 && readyAt(s, now) === 0) {
      emit({ kind: "started", provider, waitedMs: 0 });
      return Promise.resolve(start(provider, s, now));
    }
    if (s.queued >= s.limits.maxQueued) {
      emit({ kind: "shed", provider, reason: "queue_full" });
      const waitMs = Math.max(
        s.pausedUntil - now,
        Math.ceil((s.queued * windowMs) / s.limits.ratePerSecond),
      );
      return Promise.reject(
        new TokenVendError(
          "UPSTREAM_UNAVAILABLE",
          `provider "${provider}" has ${s.queued} requests waiting already; try again later`,
          { reason: "PROVIDER_OVERLOADED", retryAfterMs: waitMs, metadata: { provider } },
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        if (w.gone) return;
        w.gone = true;
        s.queued--;
        emit({ kind: "shed", provider, reason: "abandoned" });
        reject(signal.reason);
      };
      const w: Waiter = {
        since: now,
        signal,
        gone: false,
        grant: (release) => {
          signal.removeEventListener("abort", onAbort);
          resolve(release);
        },
      };
      signal.addEventListener("abort", onAbort, { once: true });
      s.queue.push(w);
      s.queued++;
      pump(provider, s);
    });
  };

  return {
    acquire,
    pause,
    observe,
    async run(provider, signal, fn) {
      const release = await acquire(provider, signal);
      try {
        return await fn();
      } catch (err) {
        observe(provider, err);
        throw err;
      } finally {
        release();
      }
    },
    usage() {
      const out = new Map<string, ProviderUsage>();
      for (const [p, s] of states) {
        out.set(p, { active: s.active, queued: s.queued, pausedUntil: s.pausedUntil });
      }
      return out;
    },
  };
}

/** No limits: every request starts at once (the core's default, and tests that need none). */
export const unlimitedProviders: ProviderLimits = {
  maxConcurrent: Number.POSITIVE_INFINITY,
  ratePerSecond: Number.POSITIVE_INFINITY,
  maxQueued: Number.POSITIVE_INFINITY,
  maxPauseMs: 0,
};

/** The flows' requests to providers, each in a slot of the limiter under its own signal. */
export function limitedFlowUpstream(
  upstream: FlowUpstream,
  limiter: ProviderLimiter,
): FlowUpstream {
  return {
    // Builds a URL (discovery at most, cached): not a request the limits are about.
    authorizationRequest: (p, req) => upstream.authorizationRequest(p, req),
    redeemCode: (p, req) => limiter.run(p, req.signal, () => upstream.redeemCode(p, req)),
    startDevice: (p, req) => limiter.run(p, req.signal, () => upstream.startDevice(p, req)),
    pollDevice: (p, req) => limiter.run(p, req.signal, () => upstream.pollDevice(p, req)),
    exchange: (p, req) => limiter.run(p, req.signal, () => upstream.exchange(p, req)),
  };
}

/**
 * Revocations in a slot of the limiter. Refreshes and grants are not wrapped: the cluster
 * refresh holds their slot itself, across its claim (cluster-refresh.ts).
 */
export function limitedRevocations(
  upstream: UpstreamClient,
  limiter: ProviderLimiter,
): UpstreamClient {
  return {
    clientCredentials: (p, req) => upstream.clientCredentials(p, req),
    refresh: (p, req) => upstream.refresh(p, req),
    revoke: (p, req) => limiter.run(p, req.signal, () => upstream.revoke(p, req)),
  };
}
