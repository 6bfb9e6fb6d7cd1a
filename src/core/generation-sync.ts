// How renewals and revocations made by other replicas reach this one: every
// syncIntervalMs the store's change feed is read (a change stream, or the
// portable change log: a cost that grows with the changes, never with the
// cached keys or the replicas). A change to a cached key newer than its cached
// generation re-reads the key, which is adopted (and pushed to its streams) or
// forgotten when revoked (ending its streams with NOT_FOUND). When the feed
// cannot vouch that it missed nothing (its first read, a lost resume point, a
// change log window passed while the store was unreachable) every cached key
// is checked once with the batched generation query. Reads start every
// syncIntervalMs however long the last one took, and re-reads run a few at a
// time, so a burst of changes does not push visibility past the interval. Off
// (0) for a store only this process writes.

import type { Clock } from "./clock.ts";
import type { KeyCache, KeyEntry } from "./key-cache.ts";
import { errorText, type Logger } from "./logger.ts";
import { startRepeating } from "./repeating.ts";
import { isLive, type LiveRecord } from "./token.ts";
import type { StoreChange, TokenStore } from "./token-store.ts";
import { reasonOf, type WatchReason } from "./token-stream.ts";

/** Keys re-read at once after a feed read. */
const REREADS_AT_ONCE = 8;

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
  /** Feed reads (or, without a feed, batched checks) run so far. */
  readonly count: number;
  /** Full checks of every cached key run so far (the feed's gaps). */
  readonly rechecks: number;
}

export function startGenerationSync(opts: GenerationSyncOptions): GenerationSync {
  const { store, cache, signal, logger: log } = opts;
  const feed = opts.intervalMs > 0 ? store.openChangeFeed() : undefined;
  let count = 0;
  let rechecks = 0;
  let method: string | undefined;

  const reread = async (entry: KeyEntry) => {
    const r = await store.getActive(entry.key, { signal });
    if (r !== undefined && !isLive(r)) opts.forget(entry);
    else if (r !== undefined) opts.adopt(entry, r, reasonOf(r));
  };

  /** Whether `theirs` is news for an entry that holds `entry.record`. */
  const newer = (entry: KeyEntry, theirs: number) => {
    const mine = entry.record?.generation;
    return mine === undefined || theirs > mine;
  };

  const recheckAll = async () => {
    rechecks++;
    const entries = [...cache.entries()];
    if (entries.length === 0) return;
    const generations = await store.activeGenerations(
      entries.map((e) => e.key),
      { signal },
    );
    await rereadAll(
      entries.filter((e) => {
        const theirs = generations.get(e.id);
        return theirs !== undefined && newer(e, theirs);
      }),
    );
  };

  /** Re-reads entries a few at a time: a burst of changes must not stretch the interval. */
  const rereadAll = async (entries: readonly KeyEntry[]) => {
    let next = 0;
    const worker = async () => {
      while (next < entries.length) await reread(entries[next++] as KeyEntry);
    };
    await Promise.all(Array.from({ length: Math.min(REREADS_AT_ONCE, entries.length) }, worker));
  };

  const apply = async (changes: readonly StoreChange[]) => {
    // A feed repeats itself (the change log's margin): the newest generation per key is enough.
    const newest = new Map<string, number>();
    for (const c of changes) newest.set(c.id, Math.max(newest.get(c.id) ?? 0, c.generation));
    const stale: KeyEntry[] = [];
    for (const [id, generation] of newest) {
      const entry = cache.find(id);
      if (entry !== undefined && newer(entry, generation)) stale.push(entry);
    }
    await rereadAll(stale);
  };

  const sync = async () => {
    // The cheap place to drop idle keys: nothing pins them, and they need no news.
    cache.evictIdle();
    if (feed === undefined) {
      count++;
      await recheckAll();
      return;
    }
    const batch = await feed.read({ signal });
    count++;
    if (method === undefined && feed.method !== undefined) {
      method = feed.method;
      log.info({ method }, "generation sync: following the store's change feed");
    }
    if (batch.gap) await recheckAll();
    else await apply(batch.changes);
  };

  const repeating = startRepeating({
    clock: opts.clock,
    intervalMs: opts.intervalMs,
    fixedRate: true,
    signal,
    run: () =>
      sync().catch((err: unknown) => log.warn({ err: errorText(err) }, "generation sync failed")),
  });

  return {
    stop() {
      repeating.stop();
      void feed?.close().catch(() => {});
    },
    get count() {
      return count;
    },
    get rechecks() {
      return rechecks;
    },
  };
}
