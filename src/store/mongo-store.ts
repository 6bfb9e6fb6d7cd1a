// The MongoDB adapter of the TokenStore port: what a cluster of replicas shares.
//
// Correctness rests on two primitives only, atomic on MongoDB and on FerretDB alike (DESIGN.md,
// "Storage and concurrency", rule 4): an insert against a unique index, and deleteOne's
// deletedCount. No transactions, no conditional updates for anything that must be exactly-once,
// no $group/$expr (FerretDB v1 lacks them): reductions to "highest generation" run here.
//
// Collections (names carry `collectionPrefix`):
//   tokens   one document per (key, generation), unique index `key_generation` {key:1, generation:1}
//            and `session_id` {sessionId:1}; token fields sealed (./sealing.ts, ./token-document.ts)
//   claims   one document per claimed (key, generation), unique index `key_generation`
//   changes  the change log, on servers without change streams (./mongo-change-log.ts)
//   keys     one check value per key id (./mongo-keys.ts)
// See docs/STORAGE.md for the fields and rules, and for the write and read concerns: every
// collection is used with write concern majority and read concern majority, so nothing that
// decides correctness is acknowledged or read before it can no longer roll back.
//
// This file holds the adapter and the token reads and writes; beside it: the client
// (./mongo-client.ts), how one command runs (./mongo-command.ts), error classification
// (./mongo-errors.ts), indexes (./mongo-indexes.ts), claims (./mongo-claims.ts), the change
// feeds (./mongo-feed.ts, ./mongo-change-stream.ts, ./mongo-change-log.ts), the key check
// (./mongo-keys.ts), the paged sweep of old generations (./mongo-sweep.ts) and re-encryption
// (./mongo-reencrypt.ts).

import type { Collection, Document, MongoClient, MongoClientOptions } from "mongodb";
import { type Logger, noopLogger } from "../core/logger.ts";
import { keyId } from "../core/token.ts";
import type {
  InsertResult,
  KeyGeneration,
  StoreCallOptions,
  SweepResult,
  TokenStore,
} from "../core/token-store.ts";
import { createChangeLog } from "./mongo-change-log.ts";
import { createMongoClaims } from "./mongo-claims.ts";
import { MAJORITY, storeClient } from "./mongo-client.ts";
import { createMongoRun } from "./mongo-command.ts";
import { fromMongo, highestPerKey, toMongo } from "./mongo-documents.ts";
import { createStoreFeed, type FeedMethod } from "./mongo-feed.ts";
import { createEnsureIndexes } from "./mongo-indexes.ts";
import type { KeyCheck } from "./mongo-keys.ts";
import { createListActive } from "./mongo-list.ts";
import { reencryptTokens } from "./mongo-reencrypt.ts";
import {
  createReplicaRegistry,
  REPLICAS_COLLECTION,
  type ReplicaRegistry,
} from "./mongo-replicas.ts";
import { createGenerationSweep } from "./mongo-sweep.ts";
import { createUnusedSessions } from "./mongo-unused.ts";
import { createMongoWrites } from "./mongo-writes.ts";
import type { ReencryptOptions, ReencryptReport } from "./reseal.ts";
import type { Keyring } from "./sealing.ts";
import { StoreError } from "./store-error.ts";
import { documentKey } from "./token-document.ts";

export interface MongoStoreOptions {
  /** A client (not closed by close()) or a connection string (the store owns that client). */
  readonly client: MongoClient | string;
  readonly dbName: string;
  readonly keyring: Keyring;
  /** Prepended to the collection names `tokens` and `claims` (letters, digits, `_`). Default "". */
  readonly collectionPrefix?: string | undefined;
  readonly logger?: Logger | undefined;
  /**
   * Upper bound of each database command, combined with the caller's signal, so nothing waits
   * forever even when a caller passes no signal. Default 10 000 ms.
   */
  readonly operationTimeoutMs?: number | undefined;
  /**
   * Driver options when `client` is a connection string. Defaults (each only when neither these
   * options nor the URI set it): serverSelectionTimeoutMS 5000, connectTimeoutMS 5000,
   * appName "tokenvend".
   */
  readonly clientOptions?: MongoClientOptions | undefined;
  /** Documents examined per sweep page, and pages per sweep() call. Defaults 1000 and 10. */
  readonly sweepPageSize?: number | undefined;
  readonly sweepMaxPages?: number | undefined;
  /** Documents per reencrypt() page. Default 500. */
  readonly reencryptPageSize?: number | undefined;
  /**
   * The change log (servers without change streams): how far back a reader looks past its
   * previous read (writers' clock skew and write latency), and how long records are kept.
   * Defaults 5 000 and 120 000 ms.
   */
  readonly changeLogMarginMs?: number | undefined;
  readonly changeLogRetentionMs?: number | undefined;
  /** "auto" (default): change streams where the server has them; "change-log": never. */
  readonly changeFeed?: "auto" | "change-log" | undefined;
  /** Wall clock for `createdAt` (default Date.now). */
  readonly now?: (() => number) | undefined;
}

export interface MongoStore extends TokenStore {
  readonly kind: "mongo";
  readonly shared: true;
  /**
   * Creates the indexes, one createIndexes command each; idempotent. Runs once per store (again
   * after a failure).
   */
  ensureIndexes(opts?: StoreCallOptions): Promise<void>;
  /**
   * The start-up work writes wait for: the indexes, the key check (SealingError KEY_MISMATCH
   * when a key id's material is not the recorded one) and the choice of change feed. Runs once
   * (again after a failure). Call it at startup to fail fast.
   */
  prepare(opts?: StoreCallOptions): Promise<void>;
  /** The change feed chosen by prepare(), once it ran. */
  readonly feedMethod: FeedMethod | undefined;
  /**
   * Rewrites every document with a value sealed under a key other than the keyring's primary with
   * the primary key, in pages (./mongo-reencrypt.ts). Documents it cannot open (key not in the
   * ring) are left alone, counted and logged.
   */
  reencrypt(opts?: ReencryptOptions): Promise<ReencryptReport>;
  /** The replicas that share this database, as they record themselves (./mongo-replicas.ts). */
  readonly replicas: ReplicaRegistry;
}

export const TOKENS_COLLECTION = "tokens";
export const CLAIMS_COLLECTION = "claims";
export const CHANGES_COLLECTION = "changes";
export const KEYS_COLLECTION = "keys";

const DEFAULT_OPERATION_TIMEOUT_MS = 10_000;
/** Keys per `$in` query of activeGenerations; 1000 keys are one command. */
const IN_CHUNK = 1_000;
/** Reads of a duplicate's winner that find it not yet majority-committed, and their pause. */
const WINNER_READS = 5;
const WINNER_PAUSE_MS = 20;
/** A first batch this large keeps a whole answer in one command (no getMore) up to 16 MB. */
const ONE_BATCH = 100_000;

export function createMongoStore(opts: MongoStoreOptions): MongoStore {
  const prefix = opts.collectionPrefix ?? "";
  if (typeof opts.dbName !== "string" || !/^[^/\\. "$*<>:|?\0]{1,63}$/.test(opts.dbName)) {
    throw new TypeError(
      'dbName must be 1-63 characters without / \\ . space " $ * < > : | ? or NUL',
    );
  }
  if (!/^[A-Za-z0-9_]{0,64}$/.test(prefix)) {
    throw new TypeError("collectionPrefix must be at most 64 letters, digits or _");
  }
  if (opts.keyring === undefined) throw new TypeError("keyring is required");
  const timeoutMs = positiveInt(
    "operationTimeoutMs",
    opts.operationTimeoutMs,
    DEFAULT_OPERATION_TIMEOUT_MS,
  );
  const sweepPageSize = positiveInt("sweepPageSize", opts.sweepPageSize, 1_000);
  const sweepMaxPages = positiveInt("sweepMaxPages", opts.sweepMaxPages, 10);
  const reencryptPage = positiveInt("reencryptPageSize", opts.reencryptPageSize, 500);
  const marginMs = positiveInt("changeLogMarginMs", opts.changeLogMarginMs, 5_000);
  const retentionMs = positiveInt("changeLogRetentionMs", opts.changeLogRetentionMs, 120_000);
  if (retentionMs < 4 * marginMs) {
    throw new RangeError("changeLogRetentionMs must be at least 4 × changeLogMarginMs");
  }
  const keyring = opts.keyring;
  const logger = opts.logger ?? noopLogger;
  const now = opts.now ?? Date.now;

  const { client, owned } = storeClient(opts.client, opts.clientOptions);
  const db = client.db(opts.dbName);
  const tokens: Collection<Document> = db.collection(`${prefix}${TOKENS_COLLECTION}`, MAJORITY);
  const claims: Collection<Document> = db.collection(`${prefix}${CLAIMS_COLLECTION}`, MAJORITY);
  const changes: Collection<Document> = db.collection(`${prefix}${CHANGES_COLLECTION}`, MAJORITY);
  const keys: Collection<KeyCheck> = db.collection(`${prefix}${KEYS_COLLECTION}`, MAJORITY);

  let closed = false;
  const run = createMongoRun(
    timeoutMs,
    () => closed,
    () => client.connect(),
  );
  const ensureIndexes = createEnsureIndexes({
    tokens,
    claims,
    changes,
    run,
    logger,
    dbName: opts.dbName,
    prefix,
  });
  const changeLog = createChangeLog({ changes, run, now, marginMs, retentionMs });
  const writes = createMongoWrites({
    db,
    tokens,
    keys,
    changeLog,
    run,
    ensureIndexes,
    keyring,
    logger,
    now,
    changeLogOnly: opts.changeFeed === "change-log",
  });
  const { prepare, insertDoc } = writes;
  const claimOps = createMongoClaims({
    claims,
    run,
    ready: prepare,
    keyring,
    now,
    finish: async (doc, callOpts) => {
      await insertDoc(doc, callOpts);
    },
    sweepPageSize,
    sweepMaxPages,
  });
  const sweepGenerations = createGenerationSweep({
    tokens,
    run,
    pageSize: sweepPageSize,
    maxPages: sweepMaxPages,
  });

  const readActive = async (id: string, signal: AbortSignal): Promise<Document | undefined> => {
    const [doc] = await tokens
      .find({ key: id }, { sort: { generation: -1 }, limit: 1, signal })
      .toArray();
    return doc;
  };

  return {
    kind: "mongo",
    shared: true, // every replica writes the same database
    ensureIndexes,
    replicas: createReplicaRegistry({
      replicas: db.collection(`${prefix}${REPLICAS_COLLECTION}`, MAJORITY),
      run,
      keyring,
      now,
    }),
    prepare,
    get feedMethod() {
      return writes.feedMethod;
    },

    async getActive(key, callOpts) {
      const doc = await run("getActive", callOpts, (signal) => readActive(keyId(key), signal));
      return doc === undefined ? undefined : fromMongo(doc, keyring);
    },

    async getSession(sessionId, callOpts) {
      // One command: every generation of the session's keys, reduced to the highest per key
      // here (FerretDB v1 has no $group/$max). The sweeper keeps old generations few.
      const docs = await run("getSession", callOpts, (signal) =>
        tokens.find({ sessionId }, { batchSize: ONE_BATCH, signal }).toArray(),
      );
      return highestPerKey(docs).map((d) => fromMongo(d, keyring));
    },

    async sessionGenerations(sessionId, callOpts) {
      const docs = await run("sessionGenerations", callOpts, (signal) =>
        tokens
          .find(
            { sessionId },
            {
              projection: {
                _id: 0,
                key: 1,
                kind: 1,
                sessionId: 1,
                provider: 1,
                generation: 1,
                reason: 1,
              },
              batchSize: ONE_BATCH,
              signal,
            },
          )
          .toArray(),
      );
      return highestPerKey(docs).map(
        (d): KeyGeneration => ({
          key: documentKey(d),
          generation: d.generation,
          revoked: d.reason === "revoked",
        }),
      );
    },

    async insert(record, callOpts): Promise<InsertResult> {
      if (await insertDoc(toMongo(record, keyring, now()), callOpts)) return { inserted: true };
      // Lost the race for this generation: read and return the winner (the recovery flow).
      const id = keyId(record.key);
      for (let i = 0; i < WINNER_READS; i++) {
        const winner = await run("insert (read winner)", callOpts, async (signal) => {
          const exact = await tokens.findOne(
            { key: id, generation: record.generation },
            { signal },
          );
          // Pruned meanwhile: only possible once a higher generation exists, which is newer still.
          return exact ?? (await readActive(id, signal));
        });
        if (winner !== null && winner !== undefined) {
          return { inserted: false, winner: fromMongo(winner, keyring) };
        }
        // The winner's insert is not majority-committed yet: a majority read does not see it.
        await new Promise((resolve) => setTimeout(resolve, WINNER_PAUSE_MS * (i + 1)));
      }
      throw new StoreError(
        "CONTENDED",
        "insert: the generation exists but neither it nor a later one could be read",
      );
    },

    async activeGenerations(list, callOpts) {
      const ids = [...new Set(list.map(keyId))];
      const out = new Map<string, number>();
      for (let i = 0; i < ids.length; i += IN_CHUNK) {
        const chunk = ids.slice(i, i + IN_CHUNK);
        // Key and generation only: no token material leaves the database, nothing is opened.
        const docs = await run("activeGenerations", callOpts, (signal) =>
          tokens
            .find(
              // One key: equality, which FerretDB pushes down to its backend; $in it does not.
              chunk.length === 1 ? { key: chunk[0] } : { key: { $in: chunk } },
              { projection: { _id: 0, key: 1, generation: 1 }, batchSize: ONE_BATCH, signal },
            )
            .toArray(),
        );
        for (const d of docs) {
          const best = out.get(d.key);
          if (typeof d.generation === "number" && (best === undefined || d.generation > best)) {
            out.set(d.key, d.generation);
          }
        }
      }
      return out;
    },

    listActive: createListActive({ tokens, run, decode: (d) => fromMongo(d, keyring) }),

    pruneBelow: (key, generation, callOpts) => writes.pruneBelow(keyId(key), generation, callOpts),

    unusedSessions: createUnusedSessions({ tokens, run }),
    claim: claimOps.claim,
    releaseClaim: claimOps.releaseClaim,
    renewClaim: claimOps.renewClaim,

    openChangeFeed: () =>
      createStoreFeed({
        tokens,
        changeLog,
        logger,
        method: async (callOpts) => {
          await prepare(callOpts);
          return writes.feedMethod as FeedMethod;
        },
        awaitMs: 500,
        maxBuffered: 100_000,
      }),

    async sweep(nowMs, callOpts): Promise<SweepResult> {
      const claimsSwept = await claimOps.sweepDead(nowMs, callOpts);
      await prepare(callOpts);
      // With the change log (FerretDB: every lookup a scan), the prunes this store still owes
      // (./mongo-writes.ts); with change streams, the paged walk over the tokens (MongoDB's
      // indexes serve it).
      const generations =
        writes.feedMethod === "change-log"
          ? await writes.prunePending(callOpts)
          : await sweepGenerations(callOpts);
      // Written by every replica whatever it reads (./mongo-writes.ts): swept by every one too.
      await changeLog.sweep(callOpts);
      return { generations, claims: claimsSwept };
    },

    reencrypt(callOpts) {
      return reencryptTokens({ tokens, run, keyring, logger, pageSize: reencryptPage }, callOpts);
    },

    async close() {
      if (closed) return;
      closed = true;
      if (owned) await client.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  return value;
}
