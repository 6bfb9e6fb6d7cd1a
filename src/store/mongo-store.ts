// The MongoDB adapter of the TokenStore port: what a cluster of replicas shares.
//
// Correctness rests on two primitives only, atomic on MongoDB and on FerretDB alike (DESIGN.md,
// "Storage and concurrency", rule 4): an insert against a unique index, and deleteOne's
// deletedCount. No transactions, no conditional updates for anything that must be exactly-once,
// no $group/$expr (FerretDB v1 lacks them): reductions to "highest generation" run here.
//
// Collections (names carry `collectionPrefix`):
//   tokens  one document per (key, generation), unique index `key_generation` {key:1, generation:1}
//           and `session_id` {sessionId:1}; token fields sealed (./sealing.ts, ./token-document.ts)
//   claims  one document per claimed (key, generation), unique index `key_generation`
// See docs/STORAGE.md for the fields and rules.
//
// This file holds the adapter and the token reads and writes; beside it: the client
// (./mongo-client.ts), how one command runs (./mongo-command.ts), error classification
// (./mongo-errors.ts), indexes (./mongo-indexes.ts), claims (./mongo-claims.ts), the paged
// sweep of old generations (./mongo-sweep.ts) and re-encryption (./mongo-reencrypt.ts).

import type { Collection, Document, MongoClient, MongoClientOptions } from "mongodb";
import { type Logger, noopLogger } from "../core/logger.ts";
import { keyId, type TokenRecord } from "../core/token.ts";
import type {
  InsertResult,
  StoreCallOptions,
  SweepResult,
  TokenStore,
} from "../core/token-store.ts";
import { createMongoClaims } from "./mongo-claims.ts";
import { storeClient } from "./mongo-client.ts";
import { createMongoRun, withSignal } from "./mongo-command.ts";
import { isDuplicateKey } from "./mongo-errors.ts";
import { createEnsureIndexes } from "./mongo-indexes.ts";
import { createListActive } from "./mongo-list.ts";
import { reencryptTokens } from "./mongo-reencrypt.ts";
import {
  createReplicaRegistry,
  REPLICAS_COLLECTION,
  type ReplicaRegistry,
} from "./mongo-replicas.ts";
import { createGenerationSweep } from "./mongo-sweep.ts";
import { createUnusedSessions } from "./mongo-unused.ts";
import type { ReencryptOptions, ReencryptReport } from "./reseal.ts";
import type { Keyring } from "./sealing.ts";
import { StoreError } from "./store-error.ts";
import { fromDocument, type TokenDocument, toDocument } from "./token-document.ts";

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
  /** Wall clock for `createdAt` (default Date.now). */
  readonly now?: (() => number) | undefined;
}

export interface MongoStore extends TokenStore {
  readonly kind: "mongo";
  readonly shared: true;
  /**
   * Creates the indexes, one createIndexes command each; idempotent. Runs once per store (again
   * after a failure); writes wait for it. Call it at startup to fail fast.
   */
  ensureIndexes(opts?: StoreCallOptions): Promise<void>;
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

const DEFAULT_OPERATION_TIMEOUT_MS = 10_000;
/** Keys per `$in` query of activeGenerations; 1000 keys are one command. */
const IN_CHUNK = 1_000;
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
  const keyring = opts.keyring;
  const logger = opts.logger ?? noopLogger;
  const now = opts.now ?? Date.now;

  const { client, owned } = storeClient(opts.client, opts.clientOptions);
  const db = client.db(opts.dbName);
  const tokens: Collection<Document> = db.collection(`${prefix}${TOKENS_COLLECTION}`);
  const claims: Collection<Document> = db.collection(`${prefix}${CLAIMS_COLLECTION}`);

  let closed = false;
  const run = createMongoRun(timeoutMs, () => closed);
  const ensureIndexes = createEnsureIndexes({
    tokens,
    claims,
    run,
    logger,
    dbName: opts.dbName,
    prefix,
  });
  const claimOps = createMongoClaims({
    claims,
    run,
    ensureIndexes,
    now,
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
      replicas: db.collection(`${prefix}${REPLICAS_COLLECTION}`),
      run,
      keyring,
      now,
    }),

    async getActive(key, callOpts) {
      const doc = await run("getActive", callOpts, (signal) => readActive(keyId(key), signal));
      return doc === undefined ? undefined : decode(doc, keyring);
    },

    async getSession(sessionId, callOpts) {
      // One command: every generation of the session's keys, reduced to the highest per key
      // here (FerretDB v1 has no $group/$max). The sweeper keeps old generations few.
      const docs = await run("getSession", callOpts, (signal) =>
        tokens.find({ sessionId }, { batchSize: ONE_BATCH, signal }).toArray(),
      );
      const top = new Map<string, Document>();
      for (const d of docs) {
        const best = top.get(d.key);
        if (best === undefined || d.generation > best.generation) top.set(d.key, d);
      }
      return [...top.values()].map((d) => decode(d, keyring));
    },

    async insert(record, callOpts): Promise<InsertResult> {
      await ensureIndexes(callOpts);
      const doc = toMongo(toDocument(record, keyring, now()));
      const duplicate = await run("insert", callOpts, async (signal) => {
        try {
          await tokens.insertOne(doc, withSignal({}, signal));
          return false;
        } catch (err) {
          if (isDuplicateKey(err)) return true;
          throw err;
        }
      });
      if (!duplicate) return { inserted: true };
      // Lost the race for this generation: read and return the winner (the recovery flow).
      const id = keyId(record.key);
      const winner = await run("insert (read winner)", callOpts, async (signal) => {
        const exact = await tokens.findOne({ key: id, generation: record.generation }, { signal });
        // Pruned meanwhile: only possible once a higher generation exists, which is newer still.
        return exact ?? (await readActive(id, signal));
      });
      if (winner === null || winner === undefined) {
        throw new StoreError(
          "CONTENDED",
          "insert: the generation exists but neither it nor a later one could be read",
        );
      }
      return { inserted: false, winner: decode(winner, keyring) };
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
              { key: { $in: chunk } },
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

    listActive: createListActive({ tokens, run, decode: (d) => decode(d, keyring) }),

    async pruneBelow(key, generation, callOpts) {
      const res = await run("pruneBelow", callOpts, (signal) =>
        tokens.deleteMany(
          { key: keyId(key), generation: { $lt: generation } },
          withSignal({}, signal),
        ),
      );
      return res.deletedCount;
    },

    unusedSessions: createUnusedSessions({ tokens, run }),
    claim: claimOps.claim,
    releaseClaim: claimOps.releaseClaim,

    async sweep(nowMs, callOpts): Promise<SweepResult> {
      const generations = await sweepGenerations(callOpts);
      return { generations, claims: await claimOps.sweepDead(nowMs, callOpts) };
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

/** Times are BSON dates in MongoDB, epoch ms in the shared document form. */
function toMongo(doc: TokenDocument): Document {
  const out: Document = { ...doc, createdAt: new Date(doc.createdAt) };
  if (doc.issuedAt !== undefined) out.issuedAt = new Date(doc.issuedAt);
  if (doc.expiresAt !== undefined) out.expiresAt = new Date(doc.expiresAt);
  return out;
}

function decode(doc: Document, keyring: Keyring): TokenRecord {
  const plain: Record<string, unknown> = { ...doc };
  for (const f of ["issuedAt", "expiresAt", "createdAt"]) {
    const v = plain[f];
    if (v instanceof Date) plain[f] = v.getTime();
  }
  return fromDocument(plain, keyring);
}
