// A replica on a shared store records itself (id, host, its keyring's key ids and a probe sealed
// under its primary: store/mongo-replicas.ts) at start and every interval, and removes the
// record when it stops, so `tokenvend reencrypt` can tell whether every live replica seals under
// the new primary. A failed beat is logged and tried again at the next one.

import { hostname } from "node:os";
import type { Clock } from "../core/clock.ts";
import { errorText, type Logger } from "../core/logger.ts";
import { startRepeating } from "../core/repeating.ts";
import type { ReplicaRegistry } from "../store/mongo-replicas.ts";

export interface ReplicaHeartbeat {
  /** Stops beating and removes this replica's record (bounded by `timeoutMs`). */
  stop(timeoutMs: number): Promise<void>;
}

/** A replica's record is live while its last beat is at most this many intervals old. */
export const LIVE_BEATS = 3;

export function startReplicaHeartbeat(opts: {
  readonly registry: ReplicaRegistry;
  readonly replicaId: string;
  readonly clock: Clock;
  readonly intervalMs: number;
  readonly logger: Logger;
  readonly signal: AbortSignal;
}): ReplicaHeartbeat {
  const self = {
    id: opts.replicaId,
    host: hostname(),
    pid: process.pid,
    startedAt: opts.clock.now(),
  };
  const beat = async () => {
    try {
      await opts.registry.announce(self, { signal: opts.signal });
    } catch (err) {
      if (!opts.signal.aborted) {
        opts.logger.warn({ err: errorText(err) }, "could not record this replica in the store");
      }
    }
  };
  // Not awaited: an unreachable database at start must not hold the listeners back.
  let inflight = beat();
  const repeating = startRepeating({
    clock: opts.clock,
    intervalMs: opts.intervalMs,
    signal: opts.signal,
    run: () => {
      inflight = beat();
      return inflight;
    },
  });
  return {
    async stop(timeoutMs) {
      repeating.stop();
      // A beat still running would record this replica again after its withdrawal.
      await inflight;
      await opts.registry
        .withdraw(self.id, { signal: AbortSignal.timeout(timeoutMs) })
        .catch((err: unknown) =>
          opts.logger.warn({ err: errorText(err) }, "could not remove this replica's record"),
        );
    },
  };
}
