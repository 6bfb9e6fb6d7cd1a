// The keys this replica knows: for each, the active generation it serves from
// memory, read from the store once (concurrent first readers share the read),
// and the instants the serving path and the scheduler decide by.
//
// Bounded by entries and by bytes (lru-cache, least recently used out first),
// so no caller can grow it with distinct session ids. An entry something still
// needs (a stream, a waiter on its store read, a refresh in flight, an unsaved
// renewal: `pinned`) is never dropped: when the LRU pushes one out it is held
// aside until nothing pins it, then dropped. Keys unused for idleEvictMs that
// nothing pins are dropped too, checked as new keys arrive and at every
// generation sync.

import type { SpanContext } from "@opentelemetry/api";
import { LRUCache } from "lru-cache";
import type { Clock } from "./clock.ts";
import type { TokenVendError } from "./errors.ts";
import { keyId, type LiveRecord, type TokenKey, tokenChars } from "./token.ts";

/** A key's refresh: single flight, backoff, and a renewal not stored yet. */
export interface RefreshState {
  /** The refresh in flight, shared by every caller of the key. */
  inflight: Promise<LiveRecord> | undefined;
  /** Its span, for the callers that wait on it to link to. */
  inflightSpan: SpanContext | undefined;
  /** Consecutive transient failures since the last success. */
  failures: number;
  /** No new attempt before this instant (backoff). */
  nextAttemptAt: number;
  /** The failure callers get until nextAttemptAt. */
  lastError: TokenVendError | undefined;
  /** A permanent failure of the current generation's refresh: no retry until a new one. */
  permanent: TokenVendError | undefined;
  /** A renewed token whose write failed: stored before anything else (its refresh token is the only live one). */
  unsaved: LiveRecord | undefined;
  /** Refreshes callers forced on a valid token (min validity) left in the key's budget (forced-refresh.ts). */
  forcedBudget: number;
  /** When forcedBudget was last topped up, and when a forced refresh last started (0: never). */
  forcedBudgetAt: number;
  forcedAt: number;
}

export interface KeyEntry {
  readonly key: TokenKey;
  readonly id: string;
  readonly provider: string;
  /** The active generation as this replica knows it. */
  record: LiveRecord | undefined;
  /** When renewal of `record` is due (jittered, see lifetime.ts). */
  refreshAt: number;
  /** When a renewal was last adopted (0: never); renewals are at least minRefreshIntervalMs apart. */
  renewedAt: number;
  lastUsedAt: number;
  /** The single-flight store read of a key not in memory yet. */
  loading: Promise<LiveRecord | undefined> | undefined;
  /** Owned by the refresher and the cluster refresh. */
  readonly refresh: RefreshState;
}

/** Why an entry left: pushed out by the bounds, or unused for idleEvictMs. */
export type EvictionReason = "capacity" | "idle";

export interface KeyCacheOptions {
  readonly clock: Clock;
  readonly idleEvictMs: number;
  /** Most entries held (pinned ones held aside come on top, bounded by what pins them). */
  readonly maxEntries: number;
  /** Most bytes of entries held, as entryBytes estimates them. */
  readonly maxBytes: number;
  /** Whether something still needs the entry (streams, waiters, refreshes, unsaved renewals). */
  readonly pinned: (entry: KeyEntry) => boolean;
  /** Called for every entry that leaves the cache, whatever the reason. */
  readonly onDrop: (entry: KeyEntry) => void;
  /** Called for every entry the bounds or idleness pushed out. */
  readonly onEvict?: ((reason: EvictionReason) => void) | undefined;
}

export interface KeyCache {
  /** The entry of `key`, created when missing; marks it most recently used. */
  entry(key: TokenKey, provider: string): KeyEntry;
  find(id: string): KeyEntry | undefined;
  /** Whether `entry` is still the cached one of its key: work finishing after a drop must not revive it. */
  holds(entry: KeyEntry): boolean;
  /** The entry's record changed: its size is counted again. */
  resized(entry: KeyEntry): void;
  drop(entry: KeyEntry): void;
  /** Drops the entry unless something pins it (a caller-chosen id that matched nothing). */
  dropUnpinned(entry: KeyEntry): void;
  /** Drops entries idle for idleEvictMs that nothing pins, and pushed-out ones nothing pins any more. */
  evictIdle(): void;
  entries(): IterableIterator<KeyEntry>;
  readonly size: number;
  /** The estimated bytes of the entries held. */
  readonly bytes: number;
}

// Without a sync loop, idle eviction runs as new keys arrive, at most this often.
const maxEvictEveryMs = 60_000;

/**
 * What an entry costs in memory, estimated from what it holds: a fixed part (the entry, its
 * refresh state, the record and its token set, the frozen responses built per generation) and
 * the strings, each held about twice (the record, and the response encoded once per
 * generation). `npm run bench:memory` measured 2,419 B for a key of 1.7 KB tokens before its
 * response is built; the estimate (5,144 B there) adds the response and rounds up, so the
 * bound is never an undercount (docs/BENCHMARKS.md, "Memory per key").
 */
export function entryBytes(entry: KeyEntry): number {
  return entryFixedBytes + 2 * (entry.id.length + tokenChars(entry.record?.tokens));
}

/** The fixed part of entryBytes (measured ~650 B, and the response's objects). */
export const entryFixedBytes = 1_600;

export function createKeyCache(opts: KeyCacheOptions): KeyCache {
  const { clock, idleEvictMs, pinned } = opts;
  /** Pinned entries the bounds pushed out, until nothing pins them. */
  const aside = new Map<string, KeyEntry>();
  let sweepAsideAt = 1_024;
  let lastEvictAt = clock.now();

  const dropNow = (entry: KeyEntry, reason: EvictionReason | undefined) => {
    opts.onDrop(entry);
    if (reason !== undefined) opts.onEvict?.(reason);
  };

  /** Drops what was set aside and is no longer pinned; amortized as the set grows. */
  const sweepAside = () => {
    for (const e of [...aside.values()]) {
      if (!pinned(e)) {
        aside.delete(e.id);
        dropNow(e, "capacity");
      }
    }
    sweepAsideAt = Math.max(1_024, 2 * aside.size);
  };

  const lru = new LRUCache<string, KeyEntry>({
    max: opts.maxEntries,
    maxSize: opts.maxBytes,
    sizeCalculation: entryBytes,
    dispose: (entry, _id, reason) => {
      if (reason === "evict") evicted(entry);
    },
  });

  /** An entry the bounds pushed out: dropped, or held aside while something pins it. */
  function evicted(entry: KeyEntry): void {
    if (!pinned(entry)) {
      dropNow(entry, "capacity");
      return;
    }
    aside.set(entry.id, entry);
    if (aside.size > sweepAsideAt) sweepAside();
  }

  const find = (id: string) => lru.peek(id) ?? aside.get(id);

  const drop = (entry: KeyEntry) => {
    if (lru.peek(entry.id) === entry) lru.delete(entry.id);
    else if (aside.get(entry.id) === entry) aside.delete(entry.id);
    else return;
    dropNow(entry, undefined);
  };

  const evictIdle = () => {
    const now = clock.now();
    lastEvictAt = now;
    for (const entry of [...lru.values()]) {
      if (now - entry.lastUsedAt > idleEvictMs && !pinned(entry)) {
        lru.delete(entry.id);
        dropNow(entry, "idle");
      }
    }
    sweepAside();
  };

  return {
    entry(key, provider) {
      const id = keyId(key);
      let entry = lru.get(id);
      if (entry !== undefined) return entry;
      entry = aside.get(id);
      if (entry !== undefined) {
        // In use again: back among the most recently used.
        aside.delete(id);
        lru.set(id, entry);
        return entry;
      }
      if (clock.now() - lastEvictAt > Math.min(idleEvictMs, maxEvictEveryMs)) evictIdle();
      entry = {
        key,
        id,
        provider,
        record: undefined,
        refreshAt: 0,
        renewedAt: 0,
        lastUsedAt: clock.now(),
        loading: undefined,
        refresh: {
          inflight: undefined,
          inflightSpan: undefined,
          failures: 0,
          nextAttemptAt: 0,
          lastError: undefined,
          permanent: undefined,
          unsaved: undefined,
          forcedBudget: Number.NaN,
          forcedBudgetAt: 0,
          forcedAt: 0,
        },
      };
      lru.set(id, entry);
      return entry;
    },
    find,
    holds: (entry) => find(entry.id) === entry,
    resized(entry) {
      if (lru.peek(entry.id) !== entry) return;
      // Out and in again (lru-cache would evict from the tail while resizing, the entry itself
      // among the candidates): now the most recently used, others pushed out for its size.
      lru.delete(entry.id);
      lru.set(entry.id, entry);
      // Alone past maxBytes, lru-cache does not keep it: it leaves like any pushed-out entry.
      if (lru.peek(entry.id) !== entry) evicted(entry);
    },
    drop,
    dropUnpinned(entry) {
      if (!pinned(entry)) drop(entry);
    },
    evictIdle,
    *entries() {
      yield* lru.values();
      yield* aside.values();
    },
    get size() {
      return lru.size + aside.size;
    },
    get bytes() {
      let aside_ = 0;
      for (const e of aside.values()) aside_ += entryBytes(e);
      return lru.calculatedSize + aside_;
    },
  };
}
