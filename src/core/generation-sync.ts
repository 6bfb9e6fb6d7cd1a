// How renewals and revocations made by other replicas reach this one: every
// syncIntervalMs, one batched query for the generations of every cached key;
// keys whose generation moved elsewhere are re-read and adopted (and pushed to
// their streams), or forgotten when revoked (ending their streams with
// NOT_FOUND). Off (0) for a store only this process writes.

import type { Clock } from "./clock.ts";
import type { KeyCache, KeyEntry } from "./key-cache.ts";
import { errorText, type Logger } from "./logger.ts";
import { startRepeating } from "./repeating.ts";
import { isLive, type LiveRecord } from "./token.ts";
import type { TokenStore } from "./token-store.ts";
import { reasonOf, type WatchReason } from "./token-stream.ts";

export interface GenerationSyncOptions {
  /** The classified store (classified-store.ts). */
  readonly store: TokenStore;
  readonly cache: KeyCache;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly intervalMs: number;
  /** The service's lifetime: the sync stops when it aborts. */
  readonly signal: AbortSignal;
  readonly adopt: (entry: KeyEntry, record: LiveRecord, reason: WatchReason) => void;
  readonly forget: (entry: KeyEntry) => void;
}

export interface GenerationSync {
  stop(): void;
  /** Batched checks run so far. */
  readonly count: number;
}

export function startGenerationSync(opts: GenerationSyncOptions): GenerationSync {
  const { store, cache, signal } = opts;
  let count = 0;

  const sync = async () => {
    // The sync walks every key anyway: idle ones go first, so they are not queried.
    cache.evictIdle();
    const entries = [...cache.entries()];
    if (entries.length === 0) return;
    const generations = await store.activeGenerations(
      entries.map((e) => e.key),
      { signal },
    );
    count++;
    for (const entry of entries) {
      const theirs = generations.get(entry.id);
      const mine = entry.record?.generation;
      if (theirs === undefined || theirs === mine || (mine !== undefined && theirs < mine)) {
        continue;
      }
      const r = await store.getActive(entry.key, { signal });
      if (r !== undefined && !isLive(r)) opts.forget(entry);
      else if (r !== undefined) opts.adopt(entry, r, reasonOf(r));
    }
  };

  const repeating = startRepeating({
    clock: opts.clock,
    intervalMs: opts.intervalMs,
    signal,
    run: () =>
      sync().catch((err: unknown) =>
        opts.logger.warn({ err: errorText(err) }, "generation sync failed"),
      ),
  });

  return {
    stop: repeating.stop,
    get count() {
      return count;
    },
  };
}
