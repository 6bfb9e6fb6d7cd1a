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

import {
  type Collection,
  type Document,
  MongoClient,
  type MongoClientOptions,
  type ObjectId,
} from "mongodb";
import { abandonWait } from "../core/abandon-wait.ts";
import { type Logger, noopLogger } from "../core/logger.ts";
import { keyId, type TokenKey, type TokenRecord } from "../core/token.ts";
import type {
  ClaimResult,
  InsertResult,
  RefreshClaim,
  StoreCallOptions,
  SweepResult,
  TokenStore,
} from "../core/token-store.ts";
import { type Keyring, SealingError } from "./sealing.ts";
import { StoreError, withDeadline } from "./store-error.ts";
import {
  fromDocument,
  keyFields,
  resealDocument,
  type TokenDocument,
  toDocument,
} from "./token-document.ts";

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
  /**
   * Creates the indexes, one createIndexes command each; idempotent. Runs once per store (again
   * after a failure); writes wait for it. Call it at startup to fail fast.
   */
  ensureIndexes(opts?: StoreCallOptions): Promise<void>;
  /**
   * Rewrites every document sealed under a key other than the keyring's primary with the primary
   * key, in pages. Returns how many documents it rewrote. Documents it cannot open (key not in
   * the ring) are left alone and logged.
   */
  reencrypt(opts?: StoreCallOptions): Promise<number>;
}

export const TOKENS_COLLECTION = "tokens";
export const CLAIMS_COLLECTION = "claims";
export const KEY_GENERATION_INDEX = "key_generation";
export const SESSION_INDEX = "session_id";

const DEFAULT_OPERATION_TIMEOUT_MS = 10_000;
const DEFAULT_CLIENT_OPTIONS = {
  serverSelectionTimeoutMS: 5_000,
  connectTimeoutMS: 5_000,
  appName: "tokenvend",
} as const;
/** Keys per `$in` query of activeGenerations; 1000 keys are one command. */
const IN_CHUNK = 1_000;
/** A first batch this large keeps a whole answer in one command (no getMore) up to 16 MB. */
const ONE_BATCH = 100_000;
/** How often claim() retries when the holder it lost to vanished before it could be read. */
const CLAIM_ATTEMPTS = 5;

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

  const owned = typeof opts.client === "string";
  let client: MongoClient;
  if (typeof opts.client === "string") {
    if (!/^mongodb(\+srv)?:\/\//.test(opts.client)) {
      throw new TypeError("client must be a MongoClient or a mongodb:// or mongodb+srv:// URI");
    }
    client = new MongoClient(opts.client, clientOptionsFor(opts.client, opts.clientOptions));
  } else if (opts.client instanceof MongoClient) {
    client = opts.client;
  } else {
    throw new TypeError("client must be a MongoClient or a mongodb:// or mongodb+srv:// URI");
  }
  const db = client.db(opts.dbName);
  const tokens: Collection<Document> = db.collection(`${prefix}${TOKENS_COLLECTION}`);
  const claims: Collection<Document> = db.collection(`${prefix}${CLAIMS_COLLECTION}`);

  let closed = false;
  /** One database command under the caller's signal and the per-command bound. */
  const run = <T>(
    what: string,
    callOpts: StoreCallOptions | undefined,
    fn: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> => {
    if (closed)
      return Promise.reject(new StoreError("UNAVAILABLE", `mongo ${what}: the store is closed`));
    return withDeadline(`mongo ${what}`, callOpts?.signal, timeoutMs, fn, (err) =>
      classifyMongoError(what, err),
    );
  };

  // Indexes: created once, shared by every caller; a caller's abort only ends its own wait.
  let indexes: Promise<void> | undefined;
  const ensureIndexes = (callOpts?: StoreCallOptions): Promise<void> => {
    indexes ??= (async () => {
      // One index per createIndexes command: the portable way (DESIGN.md rule 4).
      const specs = [
        [tokens, { key: 1, generation: 1 }, { name: KEY_GENERATION_INDEX, unique: true }],
        [tokens, { sessionId: 1 }, { name: SESSION_INDEX }],
        [claims, { key: 1, generation: 1 }, { name: KEY_GENERATION_INDEX, unique: true }],
      ] as const;
      for (const [col, spec, options] of specs) {
        await run(`createIndex ${col.collectionName}.${options.name}`, undefined, (signal) =>
          col.createIndex(spec, withSignal({ ...options }, signal)),
        );
      }
      logger.debug({ db: opts.dbName, prefix }, "mongo store indexes ensured");
    })().catch((err: unknown) => {
      indexes = undefined; // the next write tries again
      throw err;
    });
    return abandonWait(indexes, callOpts?.signal);
  };

  const readActive = async (id: string, signal: AbortSignal): Promise<Document | undefined> => {
    const [doc] = await tokens
      .find({ key: id }, { sort: { generation: -1 }, limit: 1, signal })
      .toArray();
    return doc;
  };

  const store: MongoStore = {
    kind: "mongo",
    ensureIndexes,

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

    async pruneBelow(key, generation, callOpts) {
      const res = await run("pruneBelow", callOpts, (signal) =>
        tokens.deleteMany(
          { key: keyId(key), generation: { $lt: generation } },
          withSignal({}, signal),
        ),
      );
      return res.deletedCount;
    },

    async claim(c, callOpts): Promise<ClaimResult> {
      if (!Number.isFinite(c.leaseUntil)) throw new TypeError("leaseUntil must be a finite number");
      await ensureIndexes(callOpts);
      const id = keyId(c.key);
      for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
        const holder = await run("claim", callOpts, async (signal) => {
          try {
            await claims.insertOne(
              {
                ...keyFields(c.key),
                generation: c.generation,
                owner: c.owner,
                leaseUntil: new Date(c.leaseUntil),
                createdAt: new Date(now()),
              },
              withSignal({}, signal),
            );
            return undefined;
          } catch (err) {
            if (!isDuplicateKey(err)) throw err;
          }
          // null when the holder released it (or the sweeper removed it) since our insert.
          return await claims.findOne({ key: id, generation: c.generation }, { signal });
        });
        if (holder === undefined) return { acquired: true };
        if (holder !== null) return { acquired: false, holder: decodeClaim(c.key, holder) };
      }
      throw new StoreError(
        "CONTENDED",
        `claim: lost the insert ${CLAIM_ATTEMPTS} times to holders that were gone when read`,
      );
    },

    async releaseClaim(c, callOpts) {
      const res = await run("releaseClaim", callOpts, (signal) =>
        claims.deleteOne(
          {
            key: keyId(c.key),
            generation: c.generation,
            owner: c.owner,
            leaseUntil: new Date(c.leaseUntil),
          },
          withSignal({}, signal),
        ),
      );
      return res.deletedCount === 1;
    },

    async sweep(nowMs, callOpts): Promise<SweepResult> {
      let generations = 0;
      // Walk the tokens in (key asc, generation desc) order: the first document of a key is its
      // highest generation; every later one of the same key is older and goes. The position is
      // kept between calls, so each call does bounded work and successive calls cover everything.
      for (let page = 0; page < sweepMaxPages; page++) {
        const from = sweepFrom;
        const docs = await run("sweep (scan tokens)", callOpts, (signal) =>
          tokens
            .find(
              from === undefined
                ? {}
                : {
                    $or: [
                      { key: { $gt: from.key } },
                      { key: from.key, generation: { $lt: from.generation } },
                    ],
                  },
              {
                projection: { _id: 1, key: 1, generation: 1 },
                sort: { key: 1, generation: -1 },
                limit: sweepPageSize,
                batchSize: sweepPageSize,
                signal,
              },
            )
            .toArray(),
        );
        const old: ObjectId[] = [];
        let last = from;
        for (const d of docs) {
          if (last !== undefined && d.key === last.key) old.push(d._id);
          last = { key: d.key, generation: d.generation };
        }
        sweepFrom = docs.length < sweepPageSize ? undefined : last;
        if (old.length > 0) {
          const res = await run("sweep (delete generations)", callOpts, (signal) =>
            tokens.deleteMany({ _id: { $in: old } }, withSignal({}, signal)),
          );
          generations += res.deletedCount;
        }
        if (sweepFrom === undefined) break;
      }

      let dead = 0;
      const before = new Date(nowMs);
      for (let page = 0; page < sweepMaxPages; page++) {
        const ids = await run("sweep (scan claims)", callOpts, async (signal) =>
          (
            await claims
              .find(
                { leaseUntil: { $lt: before } },
                { projection: { _id: 1 }, limit: sweepPageSize, batchSize: sweepPageSize, signal },
              )
              .toArray()
          ).map((d) => d._id as ObjectId),
        );
        if (ids.length === 0) break;
        const res = await run("sweep (delete claims)", callOpts, (signal) =>
          claims.deleteMany(
            { _id: { $in: ids }, leaseUntil: { $lt: before } },
            withSignal({}, signal),
          ),
        );
        dead += res.deletedCount;
        if (ids.length < sweepPageSize) break;
      }
      return { generations, claims: dead };
    },

    async reencrypt(callOpts) {
      // Why this is safe without compare-and-swap: a token document is never modified except by
      // this rewrite (each renewal inserts a new generation), and the rewrite keeps the plaintext.
      // Two replicas re-encrypting the same document both write valid ciphertexts of the same
      // values under the primary key, so whichever lands last is right; the filter on the old kid
      // only saves repeated work (it need not be atomic, and on FerretDB it is not). A document
      // swept meanwhile simply matches nothing. Run it only once every replica has the new
      // primary: a replica with an older primary would seal new documents under the old key.
      const primary = keyring.primaryId;
      let rewritten = 0;
      let after: ObjectId | undefined;
      const unreadable = new Map<string, number>();
      for (;;) {
        const filter: Document = { kid: { $exists: true, $ne: primary } };
        if (after !== undefined) filter._id = { $gt: after };
        const docs = await run("reencrypt (scan)", callOpts, (signal) =>
          tokens.find(filter, { sort: { _id: 1 }, limit: reencryptPage, signal }).toArray(),
        );
        for (const d of docs) {
          after = d._id;
          let fields: Document;
          try {
            fields = resealDocument(d, keyring);
          } catch (err) {
            if (!(err instanceof SealingError)) throw err;
            const kid = String(d.kid);
            unreadable.set(kid, (unreadable.get(kid) ?? 0) + 1);
            continue;
          }
          const res = await run("reencrypt (update)", callOpts, (signal) =>
            tokens.updateOne({ _id: d._id, kid: d.kid }, { $set: fields }, withSignal({}, signal)),
          );
          rewritten += res.modifiedCount;
        }
        if (docs.length < reencryptPage) break;
      }
      if (unreadable.size > 0) {
        logger.error(
          { unreadable: Object.fromEntries(unreadable), primary },
          "reencrypt left documents sealed under keys the keyring cannot open",
        );
      }
      logger.info({ rewritten, primary }, "reencrypt done");
      return rewritten;
    },

    async close() {
      if (closed) return;
      closed = true;
      if (owned) await client.close();
    },
  };
  let sweepFrom: { key: string; generation: number } | undefined;
  return store;
}

// ---------------------------------------------------------------------------------------------

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/** Our defaults, each only where neither the caller's options nor the URI set it. */
function clientOptionsFor(uri: string, given: MongoClientOptions | undefined): MongoClientOptions {
  const query = uri.includes("?") ? uri.slice(uri.indexOf("?") + 1) : "";
  const inUri = new Set([...new URLSearchParams(query).keys()].map((k) => k.toLowerCase()));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(DEFAULT_CLIENT_OPTIONS)) {
    if (!inUri.has(k.toLowerCase())) out[k] = v;
  }
  return { ...out, ...given } as MongoClientOptions;
}

/**
 * Driver 7 honours `signal` on every operation at runtime (executeOperation hands
 * `options.signal` to server selection, pool check-out and the socket), but declares it only on
 * reads. Its `timeoutMS` is a deprecated no-op in 7.x, so the bound comes from our own signal.
 */
function withSignal<T extends object>(options: T, signal: AbortSignal): T {
  return { ...options, signal } as T;
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

function decodeClaim(key: TokenKey, doc: Document): RefreshClaim {
  const { generation, owner, leaseUntil } = doc;
  if (
    typeof generation !== "number" ||
    typeof owner !== "string" ||
    !(leaseUntil instanceof Date)
  ) {
    throw new StoreError("CORRUPT", "a stored claim document is malformed");
  }
  return { key, generation, owner, leaseUntil: leaseUntil.getTime() };
}

// ---------------------------------------------------------------------------------------------
// Error classification: by class name, label and code, never by message text.

function isDuplicateKey(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === 11000;
}

const UNAVAILABLE_NAMES = new Set([
  "MongoNetworkError",
  "MongoNetworkTimeoutError",
  "MongoServerSelectionError",
  "MongoPoolClearedError",
  "MongoTopologyClosedError",
  "MongoNotConnectedError",
  "MongoServerClosedError",
  "MongoOperationTimeoutError",
  "MongoWaitQueueTimeoutError",
  "TimeoutError",
  "AbortError",
]);
const UNAVAILABLE_LABELS = [
  "ResetPool",
  "RetryableWriteError",
  "TransientTransactionError",
  "SystemOverloadedError",
];
/** Server codes that mean "not now" rather than "no": shutdown, failover, network, time limits. */
const UNAVAILABLE_SERVER_CODES = new Set([
  6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
]);
/** Node socket errors; a dropped connection may surface as a plain Error with one of these. */
const UNAVAILABLE_SYSTEM_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ERR_SOCKET_CLOSED",
  "ERR_STREAM_DESTROYED",
  "ERR_STREAM_WRITE_AFTER_END",
]);

export function isMongoUnavailable(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const e = err as {
    name?: unknown;
    code?: unknown;
    hasErrorLabel?: (label: string) => boolean;
  };
  if (typeof e.name === "string" && UNAVAILABLE_NAMES.has(e.name)) return true;
  if (typeof e.hasErrorLabel === "function" && UNAVAILABLE_LABELS.some((l) => e.hasErrorLabel?.(l)))
    return true;
  if (typeof e.code === "number" && UNAVAILABLE_SERVER_CODES.has(e.code)) return true;
  if (typeof e.code === "string" && UNAVAILABLE_SYSTEM_CODES.has(e.code)) return true;
  return false;
}

function classifyMongoError(what: string, err: unknown): unknown {
  if (err instanceof StoreError || err instanceof SealingError) return err;
  if (isMongoUnavailable(err)) {
    return new StoreError("UNAVAILABLE", `mongo ${what}: the database is unreachable`, {
      cause: err,
    });
  }
  const code = (err as { code?: unknown } | null)?.code;
  return new StoreError(
    "FAILED",
    `mongo ${what} failed${typeof code === "number" || typeof code === "string" ? ` (code ${code})` : ""}`,
    { cause: err },
  );
}
