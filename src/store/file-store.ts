// The file adapter of the TokenStore port: one node that keeps its tokens across restarts.
//
// Everything durable lives in one JSON state file, `<dir>/tokens.json` (mode 0600, directory
// 0700), holding the same documents as the MongoDB adapter with the token fields sealed the same
// way (./token-document.ts). Every change rewrites the file atomically: write a temp file, fsync
// it, rename it over the old one, fsync the directory; a crash at any point leaves either the old
// or the new state. Changes run one at a time through an in-process queue, and readers only ever
// see state that is on disk.
//
// One process per directory: `<dir>/tokenvend.lock` names the holder's pid. A lock whose process
// is dead is taken over; a live one is refused. Refresh claims stay in memory: within the one
// process that holds the lock they coordinate that process's own refreshes, and a claim that
// survived a crash would only hold the next refresh back until its lease ran out.

import { randomUUID } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { type Logger, noopLogger } from "../core/logger.ts";
import { keyId, type TokenRecord } from "../core/token.ts";
import type {
  ClaimResult,
  InsertResult,
  RefreshClaim,
  StoreCallOptions,
  SweepResult,
  TokenStore,
} from "../core/token-store.ts";
import { isAlive } from "../process-alive.ts";
import { type Keyring, SealingError } from "./sealing.ts";
import { StoreError } from "./store-error.ts";
import {
  documentKey,
  fromDocument,
  resealDocument,
  type TokenDocument,
  toDocument,
} from "./token-document.ts";

export interface FileStoreOptions {
  /** The store's directory; created (mode 0700) when missing. */
  readonly dir: string;
  readonly keyring: Keyring;
  readonly logger?: Logger | undefined;
  /** Wall clock for `createdAt` (default Date.now). */
  readonly now?: (() => number) | undefined;
}

export interface FileStore extends TokenStore {
  readonly kind: "file";
  /** The state file. */
  readonly path: string;
  /** Re-seals every document sealed under a non-primary key with the primary; one write. */
  reencrypt(opts?: StoreCallOptions): Promise<number>;
}

export const STATE_FILE = "tokens.json";
export const LOCK_FILE = "tokenvend.lock";
const FORMAT = "tokenvend-file-store";
const VERSION = 1;

interface StateFile {
  format: typeof FORMAT;
  version: typeof VERSION;
  tokens: TokenDocument[];
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
  const claims = new Map<string, RefreshClaim>();
  try {
    await removeTempFiles(dir);
    for (const doc of await load(statePath, keyring)) add(doc);
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
  }

  function remove(doc: TokenDocument): void {
    const gens = keys.get(doc.key);
    if (gens?.get(doc.generation) !== doc) return;
    gens.delete(doc.generation);
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
    const state: StateFile = { format: FORMAT, version: VERSION, tokens };
    return `${JSON.stringify(state)}\n`;
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

  const claimId = (c: RefreshClaim) => `${keyId(c.key)}#${c.generation}`;
  const decode = (doc: TokenDocument): TokenRecord =>
    fromDocument(doc as unknown as Record<string, unknown>, keyring);

  const store: FileStore = {
    kind: "file",
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

    insert(record, callOpts): Promise<InsertResult> {
      return serialized("insert", callOpts?.signal, async () => {
        const existing = keys.get(keyId(record.key))?.get(record.generation);
        if (existing !== undefined) return { inserted: false, winner: decode(existing) };
        await commit([toDocument(record, keyring, now())], []);
        return { inserted: true };
      });
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

    pruneBelow(key, generation, callOpts) {
      return serialized("pruneBelow", callOpts?.signal, async () => {
        const old = [...(keys.get(keyId(key))?.values() ?? [])].filter(
          (d) => d.generation < generation,
        );
        if (old.length > 0) await commit([], old);
        return old.length;
      });
    },

    async claim(c, callOpts): Promise<ClaimResult> {
      reading("claim", callOpts);
      const holder = claims.get(claimId(c));
      if (holder !== undefined) return { acquired: false, holder };
      claims.set(claimId(c), {
        key: c.key,
        generation: c.generation,
        owner: c.owner,
        leaseUntil: c.leaseUntil,
      });
      return { acquired: true };
    },

    async releaseClaim(c, callOpts) {
      reading("releaseClaim", callOpts);
      const holder = claims.get(claimId(c));
      if (holder === undefined || holder.owner !== c.owner || holder.leaseUntil !== c.leaseUntil)
        return false;
      return claims.delete(claimId(c));
    },

    sweep(nowMs, callOpts): Promise<SweepResult> {
      return serialized("sweep", callOpts?.signal, async () => {
        const old: TokenDocument[] = [];
        for (const [id, gens] of keys) {
          const t = top(id);
          for (const d of gens.values())
            if (t !== undefined && d.generation < t.generation) old.push(d);
        }
        if (old.length > 0) await commit([], old);
        let dead = 0;
        for (const [id, c] of claims) if (c.leaseUntil < nowMs && claims.delete(id)) dead++;
        return { generations: old.length, claims: dead };
      });
    },

    reencrypt(callOpts) {
      return serialized("reencrypt", callOpts?.signal, async () => {
        const olds: TokenDocument[] = [];
        const news: TokenDocument[] = [];
        for (const gens of keys.values()) {
          for (const d of gens.values()) {
            if (d.kid === undefined || d.kid === keyring.primaryId) continue;
            // Throws SealingError for a document the keyring cannot open: nothing is written.
            news.push({
              ...d,
              ...resealDocument(d as unknown as Record<string, unknown>, keyring),
            });
            olds.push(d);
          }
        }
        if (olds.length > 0) await commit(news, olds);
        logger.info({ rewritten: olds.length, primary: keyring.primaryId }, "reencrypt done");
        return olds.length;
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

// ---------------------------------------------------------------------------------------------
// Files

async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof StoreError || err instanceof SealingError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new StoreError("IO", `file store: ${what} failed${code ? ` (${code})` : ""}`, {
      cause: err,
    });
  }
}

let tempSeq = 0;

async function writeAtomically(dir: string, target: string, text: string): Promise<void> {
  const tmp = `${target}.${process.pid}.${tempSeq++}.tmp`;
  await io(`write ${target}`, async () => {
    try {
      const fh = await fs.open(tmp, "wx", 0o600);
      try {
        await fh.writeFile(text, "utf8");
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, target);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    // Make the rename itself durable.
    const dh = await fs.open(dir, "r");
    try {
      await dh.sync();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EINVAL" && code !== "EISDIR" && code !== "EPERM") throw err; // not supported here
    } finally {
      await dh.close();
    }
  });
}

/** Temp files left by a writer that died between creating and renaming them. */
async function removeTempFiles(dir: string): Promise<void> {
  const names = await io(`list ${dir}`, () => fs.readdir(dir));
  for (const name of names) {
    if (name.startsWith(`${STATE_FILE}.`) && name.endsWith(".tmp")) {
      await fs.rm(path.join(dir, name), { force: true });
    }
  }
}

async function load(statePath: string, keyring: Keyring): Promise<TokenDocument[]> {
  let text: string;
  try {
    text = await fs.readFile(statePath, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new StoreError("IO", `file store: cannot read ${statePath}`, { cause: err });
  }
  const bad = (why: string, cause?: unknown) =>
    new StoreError("CORRUPT", `file store: ${statePath} ${why}`, { cause });
  let state: unknown;
  try {
    state = JSON.parse(text);
  } catch (err) {
    throw bad("is not valid JSON", err);
  }
  const s = state as Partial<StateFile> | null;
  if (typeof s !== "object" || s === null || s.format !== FORMAT)
    throw bad(`is not a ${FORMAT} file`);
  if (s.version !== VERSION)
    throw bad(`has version ${String(s.version)}; this version reads ${VERSION}`);
  if (!Array.isArray(s.tokens)) throw bad(`has no "tokens" list`);
  const seen = new Set<string>();
  for (const [i, doc] of s.tokens.entries()) {
    try {
      documentKey(doc as unknown as Record<string, unknown>);
      if (!Number.isSafeInteger(doc.generation)) throw new StoreError("CORRUPT", "bad generation");
      const id = `${doc.key}#${doc.generation}`;
      if (seen.has(id)) throw new StoreError("CORRUPT", "duplicate generation");
      seen.add(id);
      // Fail at start, not on some later read, when the keyring cannot open what is stored.
      fromDocument(doc as unknown as Record<string, unknown>, keyring);
    } catch (err) {
      if (err instanceof SealingError) {
        throw new SealingError(
          err.code,
          `file store ${statePath}, token ${i + 1}: ${err.message}`,
          {
            cause: err,
          },
        );
      }
      throw bad(`token ${i + 1} is malformed`, err);
    }
  }
  return s.tokens;
}

// ---------------------------------------------------------------------------------------------
// The directory lock

/**
 * Tokens of the locks this process holds or is taking: a lock file naming our own pid is live only
 * when its token is listed (otherwise an earlier process had our pid, as after a container restart).
 */
const ourTokens = new Set<string>();

interface Lock {
  release(): Promise<void>;
}

interface LockContent {
  pid: number;
  token: string;
}

function parseLock(text: string): LockContent | undefined {
  const [pid, token] = text.trim().split(/\s+/);
  const n = Number(pid);
  return Number.isSafeInteger(n) && n > 0 && token !== undefined ? { pid: n, token } : undefined;
}

/** Whether a lock's holder may still be running. */
function isLive(content: LockContent | undefined): boolean {
  if (content === undefined) return false; // unreadable: no process can be named as its holder
  if (content.pid === process.pid) return ourTokens.has(content.token);
  return isAlive(content.pid);
}

/**
 * Takes `<dir>/tokenvend.lock`. The lock file is written in full under a temp name and then
 * hard-linked into place, which, like an O_EXCL create, fails when the lock exists, but never
 * leaves a lock file without its pid. Taking over a stale lock is serialized by a second lock
 * (`tokenvend.lock.takeover`), so of two processes finding the same dead holder only one
 * removes its lock; the other then finds the first one's lock, alive.
 */
async function acquireLock(dir: string): Promise<Lock> {
  const lockPath = path.join(dir, LOCK_FILE);
  const guardPath = `${lockPath}.takeover`;
  const token = randomUUID();
  const mine = `${process.pid} ${token}\n`;
  const tmp = `${lockPath}.${process.pid}.${token}.tmp`;
  ourTokens.add(token);
  await io(`create ${tmp}`, () => fs.writeFile(tmp, mine, { mode: 0o600, flag: "wx" }));
  const refuse = (content: LockContent) =>
    new StoreError(
      "LOCKED",
      `file store directory ${dir} is in use by process ${content.pid}` +
        `${content.pid === process.pid ? " (this process)" : ""}; stop that process first ` +
        `(if ${content.pid} is not a tokenvend process, remove ${lockPath})`,
    );
  const read = async (p: string) => parseLock(await fs.readFile(p, "utf8").catch(() => ""));
  let held = false;
  try {
    for (let attempt = 0; attempt < 200; attempt++) {
      if (await linked(tmp, lockPath)) {
        held = true;
        return {
          async release() {
            // Remove it only while it is still ours.
            if ((await read(lockPath))?.token === token) await fs.rm(lockPath, { force: true });
            ourTokens.delete(token);
          },
        };
      }
      const holder = await read(lockPath);
      if (isLive(holder) && holder !== undefined) throw refuse(holder);
      // Stale: take it over under the takeover guard.
      if (!(await linked(tmp, guardPath))) {
        const guard = await read(guardPath);
        if (guard !== undefined && !isLive(guard))
          await fs.rm(guardPath, { force: true }); // its taker died midway
        else await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      try {
        const again = await read(lockPath);
        if (again?.token === holder?.token && !isLive(again))
          await fs.rm(lockPath, { force: true });
      } finally {
        await fs.rm(guardPath, { force: true });
      }
    }
    throw new StoreError("LOCKED", `file store directory ${dir}: could not take ${lockPath}`);
  } finally {
    if (!held) ourTokens.delete(token);
    await fs.rm(tmp, { force: true });
  }
}

async function linked(from: string, to: string): Promise<boolean> {
  try {
    await fs.link(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw new StoreError("IO", `file store: cannot create ${to}`, { cause: err });
  }
}
