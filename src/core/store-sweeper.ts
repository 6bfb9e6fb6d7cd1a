// The store's housekeeping, on the injected clock: every intervalMs, old
// generations below each key's active one and claims whose lease ended are
// deleted (the design allows no TTL indexes, so the service sweeps itself).
// One sweep at a time; a failed sweep is logged, counted and tried next time.

import type { Meter } from "@opentelemetry/api";
import { attr, createSweepMetrics } from "../telemetry/metrics.ts";
import type { Clock } from "./clock.ts";
import { errorText, type Logger } from "./logger.ts";
import { startRepeating } from "./repeating.ts";
import type { TokenStore } from "./token-store.ts";

export interface StoreSweeperOptions {
  readonly store: TokenStore;
  readonly clock: Clock;
  readonly intervalMs: number;
  readonly logger: Logger;
  readonly meter: Meter;
  /** The service's lifetime: a sweep in flight is aborted with it. */
  readonly signal: AbortSignal;
}

export interface StoreSweeper {
  stop(): void;
}

export function startStoreSweeper(opts: StoreSweeperOptions): StoreSweeper {
  const { store, clock, signal, logger: log } = opts;
  const metrics = createSweepMetrics(opts.meter);

  const sweep = async () => {
    try {
      const r = await store.sweep(clock.now(), { signal });
      metrics.runs.add(1, { [attr.sweepOutcome]: "ok" });
      metrics.removed.add(r.generations, { [attr.sweepKind]: "generation" });
      metrics.removed.add(r.claims, { [attr.sweepKind]: "claim" });
      if (r.generations + r.claims > 0) log.debug({ ...r }, "swept the store");
    } catch (err) {
      metrics.runs.add(1, { [attr.sweepOutcome]: "error" });
      log.warn({ err: errorText(err) }, "sweep failed");
    }
  };

  return startRepeating({ clock, intervalMs: opts.intervalMs, signal, run: sweep });
}
