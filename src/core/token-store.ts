// The storage port. Correctness relies only on "insert generation n of a key
// succeeds for exactly one writer", which every adapter provides atomically.

import type { TokenKey, TokenRecord } from "./token.ts";

export interface StoreCallOptions {
  readonly signal?: AbortSignal | undefined;
}

export type InsertResult =
  | { readonly inserted: true }
  | { readonly inserted: false; readonly winner: TokenRecord };

export interface TokenStore {
  /** Which adapter, for logs. */
  readonly kind: string;
  /** The highest generation of a key (possibly a revocation), or undefined. */
  getActive(key: TokenKey, opts?: StoreCallOptions): Promise<TokenRecord | undefined>;
  /** The highest generation of every provider key of a session, in one round trip. */
  getSession(sessionId: string, opts?: StoreCallOptions): Promise<TokenRecord[]>;
  /**
   * Creates `record.generation` of its key. When that generation exists already,
   * nothing is written and the existing one (the winner) is returned.
   */
  insert(record: TokenRecord, opts?: StoreCallOptions): Promise<InsertResult>;
  /** The highest generation of each key (by keyId); absent keys are left out. */
  activeGenerations(
    keys: readonly TokenKey[],
    opts?: StoreCallOptions,
  ): Promise<Map<string, number>>;
  /** Deletes generations of `key` below `generation` (the sweeper's work). */
  pruneBelow(key: TokenKey, generation: number, opts?: StoreCallOptions): Promise<number>;
  close(): Promise<void>;
}
