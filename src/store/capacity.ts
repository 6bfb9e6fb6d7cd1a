// The capacity of the stores that hold every record in this process's memory (the memory and
// file stores): at most maxKeys keys and maxBytes of records (the memory store counts
// recordBytes, the file store its documents' serialized size: what each holds). Only a new key
// is refused (StoreFullError: RESOURCE_EXHAUSTED, STORE_FULL); a new generation of a key
// already held always lands, so renewals and revocations never fail here. Revoked keys count
// until the sweep removes them, tombstoneRetentionMs after the revocation.

import { type StoreCapacity, StoreFullError } from "../core/token-store.ts";

export interface Capacity {
  /** Throws StoreFullError when a new key of `size` bytes does not fit beside `keys` keys. */
  admitNewKey(keys: number, size: number): void;
  added(size: number): void;
  removed(size: number): void;
  /** Whether a key revoked at `revokedAt` may be swept at `now`. */
  expired(revokedAt: number, now: number): boolean;
  readonly bytes: number;
}

export function createCapacity(store: string, c: StoreCapacity | undefined): Capacity {
  let bytes = 0;
  return {
    admitNewKey(keys, size) {
      if (c === undefined) return;
      if (keys >= c.maxKeys) {
        throw new StoreFullError(
          `the ${store} store is full: it holds ${keys} keys, its capacity (limits.store.maxKeys); revoke sessions or raise the limit`,
        );
      }
      if (bytes + size > c.maxBytes) {
        throw new StoreFullError(
          `the ${store} store is full: ${bytes} of ${c.maxBytes} bytes (limits.store.maxBytes) in use; revoke sessions or raise the limit`,
        );
      }
    },
    added(size) {
      bytes += size;
    },
    removed(size) {
      bytes -= size;
    },
    expired: (revokedAt, now) => c !== undefined && revokedAt < now - c.tombstoneRetentionMs,
    get bytes() {
      return bytes;
    },
  };
}

/** A flow state store at its limits.flowStates.maxRecords. */
export function flowStatesFull(store: string, records: number): StoreFullError {
  return new StoreFullError(
    `the ${store} flow state store is full: ${records} pending logins and device authorizations (limits.flowStates.maxRecords); try again when some expire`,
  );
}
