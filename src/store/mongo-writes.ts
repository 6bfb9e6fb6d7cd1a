// The MongoDB store's start-up work and its one way to write a generation. prepare() ensures the
// indexes, checks the keys (./mongo-keys.ts) and decides the change feed (./mongo-feed.ts), once
// (again after a failure); every write waits for it. A generation written while the feed is the
// change log is announced there first (./mongo-change-log.ts says why first).

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
  /** Deletes the generations of key `id` below its active one; how many. */
  pruneKey(id: string, callOpts?: StoreCallOptions): Promise<number>;
}

export function createMongoWrites(opts: MongoWritesOptions): MongoWrites {
  const { tokens, changeLog, run } = opts;
  let feedMethod: FeedMethod | undefined;
  let prepared: Promise<void> | undefined;

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
      if (feedMethod === "change-log") {
        await changeLog.announce(
          { key: documentKey(doc), generation: doc.generation, reason: doc.reason },
          callOpts,
        );
      }
      return run("insert", callOpts, async (signal) => {
        try {
          await tokens.insertOne(doc, withSignal({}, signal));
          return true;
        } catch (err) {
          if (isDuplicateKey(err)) return false;
          throw err;
        }
      });
    },

    async pruneKey(id, callOpts) {
      // Every generation of the key (equality: FerretDB pushes it down); usually one, as the
      // writer pruned after its insert, and then nothing is deleted.
      const generations = await run("prune (read generations)", callOpts, async (signal) =>
        (
          await tokens
            .find({ key: id }, { projection: { _id: 0, generation: 1 }, signal })
            .toArray()
        ).map((d) => d.generation as number),
      );
      if (generations.length < 2) return 0;
      const top = Math.max(...generations);
      const res = await run("prune", callOpts, (signal) =>
        tokens.deleteMany({ key: id, generation: { $lt: top } }, withSignal({}, signal)),
      );
      return res.deletedCount;
    },
  };
}
