// Which change feed the MongoDB store gives the generation sync, decided once at start-up by
// asking the server: an aggregate with a $changeStream stage that the server runs means change
// streams (a replica set, a sharded cluster); one it refuses (a standalone server: 40573;
// FerretDB: NotImplemented) means the portable change log. A server that does not answer
// decides nothing: the question is asked again at the next use.

import type { Collection, Db, Document } from "mongodb";
import type { Logger } from "../core/logger.ts";
import type { ChangeBatch, ChangeFeed, StoreCallOptions } from "../core/token-store.ts";
import type { ChangeLog } from "./mongo-change-log.ts";
import { createChangeStreamFeed } from "./mongo-change-stream.ts";
import type { MongoRun } from "./mongo-command.ts";
import { StoreError } from "./store-error.ts";

export type FeedMethod = "change-stream" | "change-log";

/** Asks the server whether it runs change streams on `tokens`. */
export async function detectFeedMethod(
  db: Db,
  tokens: Collection<Document>,
  run: MongoRun,
  logger: Logger,
  callOpts?: StoreCallOptions,
): Promise<FeedMethod> {
  try {
    const res = await run("detect change streams", callOpts, (signal) =>
      db.command(
        { aggregate: tokens.collectionName, pipeline: [{ $changeStream: {} }], cursor: {} },
        { signal },
      ),
    );
    const cursorId = (res.cursor as { id?: unknown } | undefined)?.id;
    if (cursorId !== undefined && String(cursorId) !== "0") {
      await db.command({ killCursors: tokens.collectionName, cursors: [cursorId] }).catch(() => {});
    }
    logger.info({ method: "change-stream" }, "store change feed: change streams");
    return "change-stream";
  } catch (err) {
    if (!(err instanceof StoreError) || err.code !== "FAILED") throw err;
    const code = (err.cause as { code?: unknown } | undefined)?.code;
    logger.info(
      { method: "change-log", refusedWith: code },
      "store change feed: the change log (the server has no change streams)",
    );
    return "change-log";
  }
}

export interface StoreFeedOptions {
  readonly tokens: Collection<Document>;
  readonly changeLog: ChangeLog;
  readonly logger: Logger;
  /** Decides the method (the store's start-up work); rejects while the server does not answer. */
  readonly method: (callOpts?: StoreCallOptions) => Promise<FeedMethod>;
  /** getMore wait of the change stream while idle. */
  readonly awaitMs: number;
  readonly maxBuffered: number;
}

/** The store's feed: the change stream or the change log, whichever the server supports. */
export function createStoreFeed(opts: StoreFeedOptions): ChangeFeed {
  // The log reader starts now, before any key is cached: its first read misses nothing.
  const logRead = opts.changeLog.reader();
  let method: FeedMethod | undefined;
  let read: ((callOpts?: StoreCallOptions) => Promise<ChangeBatch>) | undefined;
  let closeStream: (() => Promise<void>) | undefined;
  let closed = false;
  return {
    get method() {
      return method;
    },
    async read(callOpts) {
      if (closed) throw new StoreError("UNAVAILABLE", "the change feed is closed");
      if (read === undefined) {
        method = await opts.method(callOpts);
        if (method === "change-log") read = logRead;
        else {
          const feed = createChangeStreamFeed({
            logger: opts.logger,
            maxBuffered: opts.maxBuffered,
            open: (pipeline, resumeAfter) =>
              opts.tokens.watch(pipeline, {
                maxAwaitTimeMS: opts.awaitMs,
                ...(resumeAfter !== undefined ? { resumeAfter } : {}),
              }),
          });
          read = feed.read;
          closeStream = feed.close;
        }
      }
      return read(callOpts);
    },
    async close() {
      closed = true;
      await closeStream?.();
    },
  };
}
