// The MongoDB store's start-up work and its one way to write a generation. prepare() ensures the
// indexes, checks the keys (./mongo-keys.ts) and decides the change feed (./mongo-feed.ts), once
// (again after a failure); every write waits for it. A generation written while the feed is the
// change log is announced there first (./mongo-change-log.ts says why first).
//
// Old generations: the core prunes below each generation it writes, at once. The generations this
// store wrote that were not pruned since (that prune failed, or nobody asked for it) are kept in
// memory and pruned by the sweep: below a generation this store inserted, which exists, so never
// below one that might not. A generation left behind by a process that died before its prune
// goes with the key's next write. So the sweep costs what failed prunes cost, and no walk over
// every key (on FerretDB every lookup scans the collection: a walk would cost its size squared).

import type { Collection, Db, Document } from "mongodb";
import { abandonWait } from "../core/abandon-wait.ts";
import type { Logger } from "../core/logger.ts";
import type { StoreCallOptions } from "../core/token-store.ts";
import type { ChangeLog } from "./mongo-change-log.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";
import { isDuplicateKey } from "./mongo-errors.ts";
import { detectFeedMethod, type FeedMethod } from "./mongo-feed.ts";
import { checkKeys, type KeyCheck } from "./mongo-keys.ts";
import type { Keyring } from "./sealing.ts";
import { documentKey } from "./token-document.ts";

export interface MongoWritesOptions {
  readonly db: Db;
  readonly tokens: Collection<Document>;
  readonly keys: Collection<KeyCheck>;
  readonly changeLog: ChangeLog;
  readonly run: MongoRun;
  readonly ensureIndexes: () => Promise<void>;
  readonly keyring: Keyring;
  readonly logger: Logger;
  readonly now: () => number;
  /** Use the change log even where the server has change streams. */
  readonly changeLogOnly: boolean;
}

export interface MongoWrites {
  prepare(callOpts?: StoreCallOptions): Promise<void>;
  readonly feedMethod: FeedMethod | undefined;
  /** Inserts a sealed token document; false when its (key, generation) exists already. */
  insertDoc(doc: Document, callOpts?: StoreCallOptions): Promise<boolean>;
  /** Prunes below `generation` of `id`, and forgets the pending prune it covers. */
  pruneBelow(id: string, generation: number, callOpts?: StoreCallOptions): Promise<number>;
  /** Runs the pending prunes of generations this store wrote; how many generations went. */
  prunePending(callOpts?: StoreCallOptions): Promise<number>;
}

export function createMongoWrites(opts: MongoWritesOptions): MongoWrites {
  const { tokens, changeLog, run } = opts;
  let feedMethod: FeedMethod | undefined;
  let prepared: Promise<void> | undefined;
  /** keyId -> the highest generation this store inserted and has not pruned below yet. */
  const pending = new Map<string, number>();

  const pruneBelow = async (id: string, generation: number, callOpts?: StoreCallOptions) => {
    const res = await run("pruneBelow", callOpts, (signal) =>
      tokens.deleteMany({ key: id, generation: { $lt: generation } }, withSignal({}, signal)),
    );
    if ((pending.get(id) ?? 0) <= generation) pending.delete(id);
    return res.deletedCount;
  };

  const prepare = (callOpts?: StoreCallOptions) => {
    prepared ??= (async () => {
      await opts.ensureIndexes();
      await checkKeys(opts.keys, opts.keyring, run, opts.now);
      feedMethod = opts.changeLogOnly
        ? "change-log"
        : await detectFeedMethod(opts.db, tokens, run, opts.logger);
    })().catch((err: unknown) => {
      prepared = undefined; // the next write tries again
      throw err;
    });
    return abandonWait(prepared, callOpts?.signal);
  };

  return {
    prepare,
    get feedMethod() {
      return feedMethod;
    },

    async insertDoc(doc, callOpts) {
      await prepare(callOpts);
      // Announced whatever this replica's own feed: another replica of the cluster may read the
      // log (its detection differed, or it was told to), and must hear of every generation.
      await changeLog.announce(
        { key: documentKey(doc), generation: doc.generation, reason: doc.reason },
        callOpts,
      );
      const inserted = await run("insert", callOpts, async (signal) => {
        try {
          await tokens.insertOne(doc, withSignal({}, signal));
          return true;
        } catch (err) {
          if (isDuplicateKey(err)) return false;
          throw err;
        }
      });
      const id = doc.key as string;
      if (inserted && doc.generation > 1 && (pending.get(id) ?? 0) < doc.generation) {
        pending.set(id, doc.generation);
      }
      return inserted;
    },

    pruneBelow,

    async prunePending(callOpts) {
      let pruned = 0;
      for (const [id, generation] of [...pending]) {
        pruned += await pruneBelow(id, generation, callOpts);
      }
      return pruned;
    },
  };
}
