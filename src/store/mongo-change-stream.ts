// Changes from a MongoDB change stream on the tokens collection (a replica set or a sharded
// cluster: every production MongoDB). The stream runs in the driver's event mode (one getMore
// per `maxAwaitTimeMS` while idle, whatever the number of keys) and its inserts are buffered
// until the generation sync reads them. The driver resumes by itself after a resumable error
// (a failover, a dropped connection) from the last resume token it saw. When the stream ends
// anyway, it is opened again after that token; when the server no longer has that point
// (ChangeStreamHistoryLost, an invalid token, an invalidate event) or the buffer overflowed, it
// starts afresh and the next batch reports a gap: the replica re-checks every cached key once.
//
// Change streams return only majority-committed changes: nothing read here can roll back.
// Only key, generation and reason leave the server ($project): no token material, sealed or not.

import type { Document } from "mongodb";
import type { Logger } from "../core/logger.ts";
import { errorText } from "../core/logger.ts";
import type { ChangeBatch, StoreChange } from "../core/token-store.ts";

/** What is used of the driver's ChangeStream (Collection.watch()), so a test can drive it. */
export interface ChangeStreamLike {
  on(event: "change", listener: (change: Document) => void): unknown;
  on(event: "error", listener: (err: unknown) => void): unknown;
  on(event: "close", listener: () => void): unknown;
  readonly resumeToken: unknown;
  close(): Promise<void>;
}

/** Opens a change stream with `pipeline`, after `resumeAfter` when given. */
export type OpenChangeStream = (
  pipeline: Document[],
  resumeAfter: unknown | undefined,
) => ChangeStreamLike;

export interface ChangeStreamFeedOptions {
  readonly open: OpenChangeStream;
  readonly logger: Logger;
  /** Changes held between two reads; past it they are dropped and the next read is a gap. */
  readonly maxBuffered: number;
}

export interface ChangeStreamFeed {
  read(): Promise<ChangeBatch>;
  close(): Promise<void>;
}

/** The stream's filter: inserts of generations, projected to what the sync needs. */
export const CHANGE_STREAM_PIPELINE: Document[] = [
  { $match: { operationType: "insert" } },
  {
    $project: {
      operationType: 1,
      "fullDocument.key": 1,
      "fullDocument.generation": 1,
      "fullDocument.reason": 1,
    },
  },
];

/** Server codes after which the resume point is gone: start afresh. */
const LOST_RESUME_POINT = new Set([
  260, // InvalidResumeToken
  280, // ChangeStreamFatalError
  286, // ChangeStreamHistoryLost
]);
const REASONS = new Set(["stored", "refreshed", "granted", "revoked"]);

export function createChangeStreamFeed(opts: ChangeStreamFeedOptions): ChangeStreamFeed {
  const { logger: log } = opts;
  let buffer: StoreChange[] = [];
  // Reads that are gaps: a fresh stream starts when the driver's aggregate reaches the server,
  // some time after start(); the read after that one has surely seen it open.
  let gaps = 2;
  let stream: ChangeStreamLike | undefined;
  let resumeAfter: unknown;
  let closed = false;

  const start = () => {
    const s = opts.open(CHANGE_STREAM_PIPELINE, resumeAfter);
    stream = s;
    s.on("change", (change) => {
      if (stream !== s) return;
      if (change.operationType === "invalidate") {
        restart(s, true);
        return;
      }
      const doc = change.fullDocument as Document | undefined;
      if (
        typeof doc?.key !== "string" ||
        typeof doc.generation !== "number" ||
        !REASONS.has(doc.reason)
      ) {
        return;
      }
      resumeAfter = s.resumeToken ?? resumeAfter;
      if (buffer.length >= opts.maxBuffered) {
        buffer = [];
        gaps = Math.max(gaps, 1);
        return;
      }
      buffer.push({ id: doc.key, generation: doc.generation, reason: doc.reason });
    });
    s.on("error", (err) => {
      if (stream !== s) return;
      const code = (err as { code?: unknown } | null)?.code;
      const lost = typeof code === "number" && LOST_RESUME_POINT.has(code);
      log.warn(
        { err: errorText(err), code, resume: !lost },
        "change stream failed; opening it again",
      );
      restart(s, lost);
    });
    s.on("close", () => {
      if (stream === s) stream = undefined; // opened again at the next read
    });
  };

  /** Drops `s`; `fresh`: its resume point is gone, so the next batch is a gap. */
  const restart = (s: ChangeStreamLike, fresh: boolean) => {
    if (stream === s) stream = undefined;
    void s.close().catch(() => {});
    if (fresh) {
      resumeAfter = undefined;
      gaps = 2;
    }
  };

  return {
    async read() {
      if (closed) throw new Error("the change stream feed is closed");
      if (stream === undefined) start();
      const batch = { changes: buffer, gap: gaps > 0 };
      buffer = [];
      if (gaps > 0) gaps--;
      return batch;
    },
    async close() {
      closed = true;
      const s = stream;
      stream = undefined;
      await s?.close();
    },
  };
}
