// The file adapter of the TokenStore port: one node that keeps its tokens across restarts.
//
// Everything durable lives in one JSON state file, `<dir>/tokens.json` (mode 0600, directory
// 0700), holding the same documents as the MongoDB adapter with the token fields sealed the same
// way (./token-document.ts). Every change rewrites the file atomically (./state-file.ts); a crash
// at any point leaves either the old or the new state. Changes run one at a time through an
// in-process queue, and readers only ever see state that is on disk.
//
// One process per directory: it holds `<dir>/tokenvend.lock` (./directory-lock.ts) from open to
// close; a lock whose process is dead is taken over, a live one is refused. Refresh claims stay in
// memory: within the one process that holds the lock they coordinate that process's own
// refreshes, and a claim that survived a crash would only hold the next refresh back until its
// lease ran out.
//
// Not shared (`shared: false`): the state is read once, at open, under the lock, and every later
// read is served from this process's copy; while the lock is held no other process (another
// replica, `npm run reencrypt`) can open the directory, so nobody else writes it and there is
// nothing to sync. The lock tells processes apart by pid, so this holds for processes that see
// one pid namespace; two containers must not share a store directory.

import * as fs from "node:fs/promises";
import * as path from "node:path";
import { type Logger, noopLogger } from "../core/logger.ts";
import { keyId, type TokenRecord } from "../core/token.ts";
import type {
  InsertResult,
  KeyGeneration,
  StoreCallOptions,
  StoreCapacity,
  SweepResult,
  TokenStore,
} from "../core/token-store.ts";
import { pageOfIds } from "./active-page.ts";
import { createCapacity } from "./capacity.ts";
import { createClaimTable } from "./claim-table.ts";
import { acquireLock } from "./directory-lock.ts";
import { io } from "./file-io.ts";
import {
  createReencryptTally,
  hasSealedValues,
  type ReencryptOptions,
  type ReencryptReport,
  resealIfStale,
} from "./reseal.ts";
import type { Keyring } from "./sealing.ts";
import {
  loadState,
  removeTempFiles,
  STATE_FILE,
  stateText,
  writeAtomically,
} from "./state-file.ts";
import { StoreError } from "./store-error.ts";
import { documentKey, fromDocument, type TokenDocument, toDocument } from "./token-document.ts";
import { openOrUnreadable } from "./unreadable.ts";
import { pickUnused } from "./unused-sessions.ts";

export interface FileStoreOptions {
  /** The store's directory; created (mode 0700) when missing. */
  readonly dir: string;
  readonly keyring: Keyring;
  readonly logger?: Logger | undefined;
  /** Wall clock for `createdAt` (default Date.now). */
  readonly now?: (() => number) | undefined;
  /** Bounds what the file (and this process's copy of it) holds (./capacity.ts); unbounded when absent. */
  readonly capacity?: StoreCapacity | undefined;
}

/** What a document costs: its serialized size, as the state file holds it. */
const docBytes = (d: TokenDocument) => JSON.stringify(d).length;

export interface FileStore extends TokenStore {
  readonly kind: "file";
  readonly shared: false;
  /** The state file. */
  readonly path: string;
  /** Re-seals every document with a value sealed under a non-primary key (./reseal.ts); one write. */
  reencrypt(opts?: ReencryptOptions): Promise<ReencryptReport>;
}

/** Opens (or creates) the store in `dir`, taking its lock. Throws StoreError LOCKED when a live process holds it. */
export async function createFileStore(opts: FileStoreOptions): Promise<FileStore> {
  if (typeof opts.dir !== "string" || opts.dir === "") throw new TypeError("dir is required");
  if (opts.keyring === undefined) throw new TypeError("keyring is required");
  const dir = path.resolve(opts.dir);
  const keyring = opts.keyring;
  const logger = opts.logger ?? noopLogger;
  const now = opts.now ?? Date.now;
  const statePath = path.join(dir, STATE_FILE);

  await io(`create ${dir}`, () => fs.mkdir(dir, { recursive: true, mode: 0o700 }));
  await fs.chmod(dir, 0o700).catch((err: NodeJS.ErrnoException) => {
    logger.warn({ dir, code: err.code }, "file store: could not make its directory mode 0700");
  });
  const lock = await acquireLock(dir);

  // keyId -> generation -> document; sessionId -> keyIds
  const keys = new Map<string, Map<number, TokenDocument>>();
  const sessions = new Map<string, Set<string>>();
  const claims = createClaimTable();
  const capacity = createCapacity("file", opts.capacity);
  try {
    await removeTempFiles(dir);
    for (const doc of await loadState(statePath, keyring)) add(doc);
  } catch (err) {
    await lock.release();
    throw err;
  }

  function add(doc: TokenDocument): void {
    let gens = keys.get(doc.key);
    if (gens === undefined) {
      gens = new Map();
      keys.set(doc.key, gens);
      if (doc.sessionId !== undefined) {
        let s = sessions.get(doc.sessionId);
        if (s === undefined) {
          s = new Set();
          sessions.set(doc.sessionId, s);
        }
        s.add(doc.key);
      }
    }
    gens.set(doc.generation, doc);
    capacity.added(docBytes(doc));
  }

  function remove(doc: TokenDocument): void {
    const gens = keys.get(doc.key);
    if (gens?.get(doc.generation) !== doc) return;
    gens.delete(doc.generation);
    capacity.removed(docBytes(doc));
    if (gens.size > 0) return;
    keys.delete(doc.key);
    if (doc.sessionId !== undefined) {
      const s = sessions.get(doc.sessionId);
      s?.delete(doc.key);
      if (s?.size === 0) sessions.delete(doc.sessionId);
    }
  }

  const top = (id: string): TokenDocument | undefined => {
    let best: TokenDocument | undefined;
    for (const d of keys.get(id)?.values() ?? [])
      if (best === undefined || d.generation > best.generation) best = d;
    return best;
  };

  const serialize = (): string => {
    const tokens: TokenDocument[] = [];
    for (const gens of keys.values()) for (const d of gens.values()) tokens.push(d);
    return stateText(tokens);
  };

  /**
   * Applies a change, writes the resulting state, and keeps the change only once it is on disk.
   * The change is applied, serialized and undone synchronously, so no reader sees it before the
   * rename; after the write it is applied again (the queue lets nothing in between).
   */
  const commit = async (adds: readonly TokenDocument[], removes: readonly TokenDocument[]) => {
    const apply = () => {
      for (const d of removes) remove(d);
      for (const d of adds) add(d);
    };
    const undo = () => {
      for (const d of adds) remove(d);
      for (const d of removes) add(d);
    };
    apply();
    let text: string;
    try {
      text = serialize();
    } finally {
      undo();
    }
    await writeAtomically(dir, statePath, text);
    apply();
  };

  // The write queue. A caller that aborts while waiting for its turn is dropped without writing;
  // once its write has started it completes (and the caller gets its result).
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;
  const serialized = <T>(what: string, signal: AbortSignal | undefined, fn: () => Promise<T>) => {
    if (closed)
      return Promise.reject(new StoreError("UNAVAILABLE", `file ${what}: the store is closed`));
    if (signal?.aborted) return Promise.reject(signal.reason);
    let started = false;
    const task = queue.then(() => {
      if (signal?.aborted) throw signal.reason;
      started = true;
      return fn();
    });
    queue = task.then(
      () => {},
      () => {},
    );
    if (signal === undefined) return task;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        if (!started) reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      task.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  };

  const reading = (what: string, callOpts: StoreCallOptions | undefined) => {
    if (closed) throw new StoreError("UNAVAILABLE", `file ${what}: the store is closed`);
    callOpts?.signal?.throwIfAborted();
  };

  const decode = (doc: TokenDocument): TokenRecord =>
    openOrUnreadable(() => fromDocument(doc as unknown as Record<string, unknown>, keyring));

  /** Inside the write queue. */
  const insertNow = async (record: TokenRecord): Promise<InsertResult> => {
    const existing = keys.get(keyId(record.key))?.get(record.generation);
    if (existing !== undefined) return { inserted: false, winner: decode(existing) };
    const doc = toDocument(record, keyring, now());
    if (!keys.has(doc.key)) capacity.admitNewKey(keys.size, docBytes(doc));
    await commit([doc], []);
    return { inserted: true };
  };

  const store: FileStore = {
    kind: "file",
    shared: false, // the directory lock keeps every other process out (see the header)
    path: statePath,

    async getActive(key, callOpts) {
      reading("getActive", callOpts);
      const d = top(keyId(key));
      return d === undefined ? undefined : decode(d);
    },

    async getSession(sessionId, callOpts) {
      reading("getSession", callOpts);
      const out: TokenRecord[] = [];
      for (const id of sessions.get(sessionId) ?? []) {
        const d = top(id);
        if (d !== undefined) out.push(decode(d));
      }
      return out;
    },

    async sessionGenerations(sessionId, callOpts) {
      reading("sessionGenerations", callOpts);
      const out: KeyGeneration[] = [];
      for (const id of sessions.get(sessionId) ?? []) {
        const d = top(id);
        if (d === undefined) continue;
        const key = documentKey(d as unknown as Record<string, unknown>);
        out.push({ key, generation: d.generation, revoked: d.reason === "revoked" });
      }
      return out;
    },

    insert(record, callOpts): Promise<InsertResult> {
      return serialized("insert", callOpts?.signal, () => insertNow(record));
    },

    async activeGenerations(list, callOpts) {
      reading("activeGenerations", callOpts);
      const out = new Map<string, number>();
      for (const key of list) {
        const id = keyId(key);
        const d = top(id);
        if (d !== undefined) out.set(id, d.generation);
      }
      return out;
    },

    async listActive({ after, limit }, callOpts) {
      reading("listActive", callOpts);
      const page = pageOfIds(keys.keys(), after, limit);
      return { records: page.ids.map((id) => decode(top(id) as TokenDocument)), next: page.next };
    },

    pruneBelow(key, generation, callOpts) {
      return serialized("pruneBelow", callOpts?.signal, async () => {
        const old = [...(keys.get(keyId(key))?.values() ?? [])].filter(
          (d) => d.generation < generation,
        );
        if (old.length > 0) await commit([], old);
        return old.length;
      });
    },

    async unusedSessions(provider, q, callOpts) {
      reading("unusedSessions", callOpts);
      const actives = [...keys.keys()].map(top);
      return pickUnused(
        actives.flatMap((d) =>
          d?.kind === "session" && d.provider !== undefined && d.sessionId !== undefined
            ? [
                {
                  provider: d.provider,
                  sessionId: d.sessionId,
                  generation: d.generation,
                  issuedAt: d.reason === "revoked" ? undefined : d.issuedAt,
                  hasRefreshToken: d.refreshToken !== undefined,
                },
              ]
            : [],
        ),
        provider,
        q,
      );
    },

    async claim(c, callOpts) {
      reading("claim", callOpts);
      return claims.claim(c);
    },

    async releaseClaim(c, callOpts) {
      reading("releaseClaim", callOpts);
      return claims.release(c);
    },

    async renewClaim(c, leaseUntil, renewal, callOpts) {
      reading("renewClaim", callOpts);
      return claims.renew(c, leaseUntil, renewal);
    },

    openChangeFeed: () => undefined,

    sweep(nowMs, callOpts): Promise<SweepResult> {
      return serialized("sweep", callOpts?.signal, async () => {
        const dead = claims.sweep(nowMs);
        for (const r of dead.renewals) await insertNow(r);
        const old: TokenDocument[] = [];
        for (const [id, gens] of keys) {
          const t = top(id);
          // A revocation past its retention goes with everything below it.
          const gone = t?.reason === "revoked" && capacity.expired(t.createdAt, nowMs);
          for (const d of gens.values())
            if (t !== undefined && (gone || d.generation < t.generation)) old.push(d);
        }
        if (old.length > 0) await commit([], old);
        return { generations: old.length, claims: dead.dead };
      });
    },

    reencrypt(opts) {
      return serialized("reencrypt", opts?.signal, async () => {
        const tally = createReencryptTally();
        const olds: TokenDocument[] = [];
        const news: TokenDocument[] = [];
        for (const gens of keys.values()) {
          for (const d of gens.values()) {
            const plain = d as unknown as Record<string, unknown>;
            if (!hasSealedValues(plain)) continue;
            const outcome = resealIfStale(plain, keyring);
            tally.add(outcome);
            if (outcome.kind !== "stale") continue;
            news.push({ ...d, ...outcome.fields });
            olds.push(d);
          }
        }
        if (olds.length > 0 && !opts?.dryRun) await commit(news, olds);
        const report = tally.report();
        opts?.onProgress?.(report);
        logger.info(
          { resealed: report.resealed, dryRun: opts?.dryRun === true, primary: keyring.primaryId },
          "reencrypt done",
        );
        return report;
      });
    },

    async close() {
      if (closed) return;
      closed = true;
      await queue;
      keys.clear();
      sessions.clear();
      claims.clear();
      await lock.release();
    },
  };
  return store;
}
