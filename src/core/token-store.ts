// The storage port. Correctness relies only on "insert generation n of a key
// succeeds for exactly one writer", which every adapter provides atomically.

import type { TokenKey, TokenRecord } from "./token.ts";

export interface StoreCallOptions {
  readonly signal?: AbortSignal | undefined;
}

export type InsertResult =
  | { readonly inserted: true }
  | { readonly inserted: false; readonly winner: TokenRecord };

/** A replica's claim to redeem the refresh token of one generation of a key. */
export interface RefreshClaim {
  readonly key: TokenKey;
  /** The generation whose refresh token is being redeemed. */
  readonly generation: number;
  /** Who holds it: a replica id. */
  readonly owner: string;
  /** Wall-clock ms after which the claim is dead and may be taken over. */
  readonly leaseUntil: number;
}

export type ClaimResult =
  | { readonly acquired: true }
  | { readonly acquired: false; readonly holder: RefreshClaim };

/** One page of listActive. */
export interface ActivePage {
  readonly records: TokenRecord[];
  /** Pass as `after` for the next page; undefined after the last page. */
  readonly next: string | undefined;
}

export interface SweepResult {
  readonly generations: number;
  readonly claims: number;
}

/** Where a scan of unused sessions resumes: after this (issuedAt, sessionId), exclusive. */
export interface UnusedCursor {
  readonly issuedAt: number;
  readonly sessionId: string;
}

/** A session whose active generation's refresh token has not been used since `issuedAt`. */
export interface UnusedSession extends UnusedCursor {
  readonly generation: number;
}

export interface UnusedQuery {
  /** Only tokens obtained before this wall-clock ms. */
  readonly before: number;
  readonly after?: UnusedCursor | undefined;
  readonly limit: number;
}

export interface TokenStore {
  /** Which adapter, for logs. */
  readonly kind: string;
  /** Other processes may write it, so cached keys must be synced. */
  readonly shared: boolean;
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
  /**
   * One page of every key's highest generation (revocations included), at most `limit` keys,
   * continuing after the cursor of the previous page (`after`, opaque). For export: a key
   * written while paging may or may not be listed, and none is listed twice.
   */
  listActive(
    page: { readonly after?: string | undefined; readonly limit: number },
    opts?: StoreCallOptions,
  ): Promise<ActivePage>;
  /** Deletes generations of `key` below `generation` (the sweeper's work). */
  pruneBelow(key: TokenKey, generation: number, opts?: StoreCallOptions): Promise<number>;
  /**
   * Claims (key, generation) for a refresh. Exactly one concurrent caller
   * acquires it; the others get the current holder.
   */
  claim(claim: RefreshClaim, opts?: StoreCallOptions): Promise<ClaimResult>;
  /** Deletes this exact claim (same owner and lease); true only for the one caller that deleted it. */
  releaseClaim(claim: RefreshClaim, opts?: StoreCallOptions): Promise<boolean>;
  /**
   * Sessions of `provider` whose active generation holds a refresh token obtained before
   * `q.before` (unused since), ordered by (issuedAt, sessionId), after `q.after`, at most
   * `q.limit`. MongoDB answers it from the index `provider_issued` (./mongo-unused.ts).
   */
  unusedSessions(
    provider: string,
    q: UnusedQuery,
    opts?: StoreCallOptions,
  ): Promise<UnusedSession[]>;
  /** Deletes generations below each key's active one and claims whose lease ended before `now`. */
  sweep(now: number, opts?: StoreCallOptions): Promise<SweepResult>;
  close(): Promise<void>;
}
