// The keys this replica knows: for each, the active generation it serves from
// memory, read from the store once (concurrent first readers share the read),
// and the instants the serving path and the scheduler decide by. Keys unused for
// idleEvictMs that nothing pins (a stream, a refresh, an unsaved renewal) are
// dropped, checked as new keys arrive and at every generation sync.

import type { SpanContext } from "@opentelemetry/api";
import type { Clock } from "./clock.ts";
import type { TokenVendError } from "./errors.ts";
import { keyId, type LiveRecord, type TokenKey } from "./token.ts";

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

export interface KeyCacheOptions {
  readonly clock: Clock;
  readonly idleEvictMs: number;
  /** Whether something still needs the entry (streams, refreshes, unsaved renewals). */
  readonly pinned: (entry: KeyEntry) => boolean;
  /** Called for every entry that leaves the cache, whatever the reason. */
  readonly onDrop: (entry: KeyEntry) => void;
}

export interface KeyCache {
  /** The entry of `key`, created when missing. */
  entry(key: TokenKey, provider: string): KeyEntry;
  find(id: string): KeyEntry | undefined;
  /** Whether `entry` is still the cached one of its key: work finishing after a drop must not revive it. */
  holds(entry: KeyEntry): boolean;
  drop(entry: KeyEntry): void;
  /** Drops the entry unless something pins it (a caller-chosen id that matched nothing). */
  dropUnpinned(entry: KeyEntry): void;
  /** Drops entries idle for idleEvictMs that nothing pins. */
  evictIdle(): void;
  entries(): IterableIterator<KeyEntry>;
  readonly size: number;
}

// Without a sync loop, idle eviction runs as new keys arrive, at most this often.
const maxEvictEveryMs = 60_000;

export function createKeyCache(opts: KeyCacheOptions): KeyCache {
  const { clock, idleEvictMs, pinned } = opts;
  const byId = new Map<string, KeyEntry>();
  let lastEvictAt = clock.now();

  const drop = (entry: KeyEntry) => {
    if (byId.get(entry.id) !== entry) return;
    byId.delete(entry.id);
    opts.onDrop(entry);
  };

  const evictIdle = () => {
    const now = clock.now();
    lastEvictAt = now;
    for (const entry of [...byId.values()]) {
      if (now - entry.lastUsedAt > idleEvictMs && !pinned(entry)) drop(entry);
    }
  };

  return {
    entry(key, provider) {
      const id = keyId(key);
      let entry = byId.get(id);
      if (entry === undefined) {
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
          },
        };
        byId.set(id, entry);
      }
      return entry;
    },
    find: (id) => byId.get(id),
    holds: (entry) => byId.get(entry.id) === entry,
    drop,
    dropUnpinned(entry) {
      if (!pinned(entry)) drop(entry);
    },
    evictIdle,
    entries: () => byId.values(),
    get size() {
      return byId.size;
    },
  };
}
