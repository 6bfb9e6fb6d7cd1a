// The storage port. Correctness relies only on "insert generation n of a key
// succeeds for exactly one writer", which every adapter provides atomically.

import {
  type GenerationReason,
  keyId,
  type LiveRecord,
  type TokenKey,
  type TokenRecord,
  tokenChars,
} from "./token.ts";

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
  /**
   * Set by the holder once the provider answered: the refresh token is spent and this is what it
   * obtained (its next generation). A dead claim that carries it is finished by storing it,
   * never by redeeming the spent token again.
   */
  readonly renewal?: LiveRecord | undefined;
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

/** A new generation of a key, written by any process. */
export interface StoreChange {
  /** keyId(key). */
  readonly id: string;
  readonly generation: number;
  readonly reason: GenerationReason;
}

export interface ChangeBatch {
  /** What changed since the previous read; a key may appear more than once, and again later. */
  readonly changes: readonly StoreChange[];
  /**
   * The feed cannot vouch that nothing was missed since the previous read (its start, a resume
   * point or the change log's window lost): every cached key must be checked again.
   */
  readonly gap: boolean;
}

/** Changes made by every process sharing the store, read by the generation sync. */
export interface ChangeFeed {
  /** How changes are learnt ("change-stream", "change-log"), once known; for logs and stats. */
  readonly method: string | undefined;
  read(opts?: StoreCallOptions): Promise<ChangeBatch>;
  close(): Promise<void>;
}

/** A key's active generation, read without opening any token. */
export interface KeyGeneration {
  readonly key: TokenKey;
  readonly generation: number;
  readonly revoked: boolean;
}

/**
 * A stored generation exists but cannot be opened: a key id the keyring lacks, key material that
 * is not the one that sealed it, or a malformed document. Not transient: retrying cannot help.
 */
export class UnreadableRecordError extends Error {
  override readonly name = "UnreadableRecordError";
  /** Why (KEY_NOT_FOUND, DECRYPT_FAILED, MALFORMED, CORRUPT): a small closed set, for metrics. */
  readonly reason: string;

  constructor(reason: string, message: string, opts: { cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.reason = reason;
  }
}

/**
 * The store is full (the memory and file stores' configured capacity): a new key is refused,
 * never a new generation of a key it holds, so renewals and revocations always land.
 */
export class StoreFullError extends Error {
  override readonly name = "StoreFullError";
}

/** How much a store that holds everything in this process's memory may hold. */
export interface StoreCapacity {
  /** Most keys (sessions × providers and grants), revoked ones included until swept. */
  readonly maxKeys: number;
  /** Most bytes of stored records, estimated from their strings. */
  readonly maxBytes: number;
  /** A revoked key's last record is swept this long after the revocation. */
  readonly tombstoneRetentionMs: number;
}

/**
 * What a record costs a store in memory, estimated: its strings (one byte a character: tokens
 * are ASCII) and a fixed part for the objects around them. `npm run bench:memory` measured
 * 2,750 B for a record of 1.7 KB tokens (docs/BENCHMARKS.md, "Memory per key").
 */
export function recordBytes(r: TokenRecord): number {
  return 1_000 + keyId(r.key).length + tokenChars(r.tokens);
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
  /** The highest generation of each key (by keyId); absent keys are left out. Opens nothing. */
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
  /** The active generation of every key of a session, in one round trip; opens nothing. */
  sessionGenerations(sessionId: string, opts?: StoreCallOptions): Promise<KeyGeneration[]>;
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
  /**
   * The holder's heartbeat: moves the lease of this exact claim (same owner and lease) to
   * `leaseUntil`, recording `renewal` when given. The claim as it now is, or undefined when it is
   * no longer held as given (taken over).
   */
  renewClaim(
    claim: RefreshClaim,
    leaseUntil: number,
    renewal: LiveRecord | undefined,
    opts?: StoreCallOptions,
  ): Promise<RefreshClaim | undefined>;
  /**
   * The feed of changes made by every process sharing the store; undefined for a store only this
   * process writes. Opened once, by the generation sync.
   */
  openChangeFeed(): ChangeFeed | undefined;
  /** Deletes generations below each key's active one and claims whose lease ended before `now`. */
  sweep(now: number, opts?: StoreCallOptions): Promise<SweepResult>;
  close(): Promise<void>;
}
