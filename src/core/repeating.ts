// Work repeated on the injected clock: a run every intervalMs, one at a time
// (the next interval starts when a run has settled; with `fixedRate`, runs
// start intervalMs apart, or at once after a run that took longer), stopped by
// stop() or by the service's signal, with nothing left armed. intervalMs <= 0:
// never runs.

import type { Clock, Timer } from "./clock.ts";

export interface Repeating {
  stop(): void;
}

export function startRepeating(opts: {
  readonly clock: Clock;
  readonly intervalMs: number;
  readonly signal: AbortSignal;
  /** Must not reject: a run handles its own failures. */
  readonly run: () => Promise<void>;
  /** Runs start intervalMs apart, however long each takes (a bound on the sync's delay). */
  readonly fixedRate?: boolean;
}): Repeating {
  const { signal } = opts;
  let timer: Timer | undefined;
  let stopped = false;
  const arm = (delayMs = opts.intervalMs) => {
    if (opts.intervalMs <= 0 || stopped || signal.aborted) return;
    timer = opts.clock.setTimer(delayMs, () => {
      const startedAt = opts.clock.now();
      void opts
        .run()
        .finally(() =>
          arm(
            opts.fixedRate
              ? Math.max(0, opts.intervalMs - (opts.clock.now() - startedAt))
              : opts.intervalMs,
          ),
        );
    });
  };
  const stop = () => {
    stopped = true;
    timer?.cancel();
    signal.removeEventListener("abort", stop);
  };
  signal.addEventListener("abort", stop, { once: true });
  arm();
  return { stop };
}
