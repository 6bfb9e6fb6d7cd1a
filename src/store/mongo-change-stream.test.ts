// The change-stream feed, driven through a stand-in for the driver's ChangeStream (the events
// and the resume token Collection.watch() gives): no MongoDB replica set can run here. What a
// real server does is the driver's; what is proven is what the feed does with it.

import { EventEmitter } from "node:events";
import test from "ava";
import type { Document } from "mongodb";
import { noopLogger } from "../core/logger.ts";
import {
  CHANGE_STREAM_PIPELINE,
  type ChangeStreamLike,
  createChangeStreamFeed,
} from "./mongo-change-stream.ts";

class FakeStream extends EventEmitter implements ChangeStreamLike {
  resumeToken: unknown;
  closed = false;
  readonly pipeline: Document[];
  readonly resumeAfter: unknown;
  constructor(pipeline: Document[], resumeAfter: unknown) {
    super();
    this.pipeline = pipeline;
    this.resumeAfter = resumeAfter;
  }
  async close() {
    this.closed = true;
    this.emit("close");
  }
  insert(n: number, key = "k") {
    this.resumeToken = { _data: `token-${n}` };
    this.emit("change", {
      _id: this.resumeToken,
      operationType: "insert",
      fullDocument: { key, generation: n, reason: "refreshed" },
    });
  }
}

function setup(maxBuffered = 100) {
  const opened: FakeStream[] = [];
  const feed = createChangeStreamFeed({
    logger: noopLogger,
    maxBuffered,
    open: (pipeline, resumeAfter) => {
      const s = new FakeStream(pipeline, resumeAfter);
      opened.push(s);
      return s;
    },
  });
  const last = () => opened[opened.length - 1] as FakeStream;
  return { feed, opened, last };
}

test("inserts are buffered between reads and handed over once; the first two reads are gaps", async (t) => {
  const { feed, opened, last } = setup();
  t.deepEqual(await feed.read(), { changes: [], gap: true });
  t.is(opened.length, 1);
  t.deepEqual(last().pipeline, CHANGE_STREAM_PIPELINE);
  t.is(last().resumeAfter, undefined);
  last().insert(2);
  last().emit("change", { operationType: "insert", fullDocument: { key: "k", generation: "x" } });
  last().emit("change", {
    operationType: "insert",
    fullDocument: { key: "k", generation: 3, reason: "nope" },
  });
  t.deepEqual(await feed.read(), {
    changes: [{ id: "k", generation: 2, reason: "refreshed" }],
    gap: true,
  });
  last().insert(3);
  last().insert(4, "other");
  t.deepEqual(await feed.read(), {
    changes: [
      { id: "k", generation: 3, reason: "refreshed" },
      { id: "other", generation: 4, reason: "refreshed" },
    ],
    gap: false,
  });
  t.deepEqual(await feed.read(), { changes: [], gap: false });
  t.is(opened.length, 1);
  await feed.close();
  t.true(last().closed);
});

test("a stream that fails is opened again after its last resume token: no gap", async (t) => {
  const { feed, opened, last } = setup();
  await feed.read();
  await feed.read();
  last().insert(5);
  last().emit("error", Object.assign(new Error("not primary"), { code: 10107 }));
  t.true(opened[0]?.closed);
  const batch = await feed.read();
  t.deepEqual(batch, { changes: [{ id: "k", generation: 5, reason: "refreshed" }], gap: false });
  t.is(opened.length, 2);
  t.deepEqual(last().resumeAfter, { _data: "token-5" });
});

test("a lost resume point (ChangeStreamHistoryLost), or an invalidate event, starts afresh with a gap", async (t) => {
  for (const fail of [
    (s: FakeStream) => s.emit("error", Object.assign(new Error("history lost"), { code: 286 })),
    (s: FakeStream) => s.emit("change", { operationType: "invalidate" }),
  ]) {
    const { feed, opened, last } = setup();
    await feed.read();
    await feed.read();
    last().insert(7);
    fail(last());
    const batch = await feed.read();
    t.true(batch.gap);
    t.is(opened.length, 2);
    t.is(last().resumeAfter, undefined);
    t.true((await feed.read()).gap, "the fresh stream's start is not known until its next read");
    t.false((await feed.read()).gap);
  }
});

test("more changes than the buffer holds between two reads: dropped, and the next read is a gap", async (t) => {
  const { feed, last } = setup(3);
  await feed.read();
  await feed.read();
  for (let n = 1; n <= 5; n++) last().insert(n);
  const batch = await feed.read();
  t.true(batch.gap);
  t.true(batch.changes.length <= 3);
  t.false((await feed.read()).gap);
});

test("a stream the driver closed (a topology closed) is opened again at the next read", async (t) => {
  const { feed, opened, last } = setup();
  await feed.read();
  await last().close();
  await feed.read();
  t.is(opened.length, 2);
});
