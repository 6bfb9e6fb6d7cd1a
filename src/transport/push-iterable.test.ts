import { getEventListeners } from "node:events";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import test from "ava";
import { iterableOf } from "./push-iterable.ts";
import { type PushStreamImpl, pushStream, pushStreamOf, type StreamSink } from "./push-stream.ts";

/** A push-form handler's sink, caught for the test to drive, and the reader of its iterable. */
function open(push?: (sink: StreamSink<string>, ctx: HandlerContext) => void) {
  const controller = new AbortController();
  const ctx = { signal: controller.signal } as HandlerContext;
  let sink: StreamSink<string> | undefined;
  const it = iterableOf<string, string>((_request, c, s) => {
    sink = s;
    push?.(s, c);
  })("request", ctx);
  return {
    it,
    controller,
    sink: () => {
      if (sink === undefined) throw new Error("the handler has not run yet");
      return sink;
    },
    listeners: () => getEventListeners(controller.signal, "abort").length,
  };
}

test("the reader gets the newest message not yet taken: newer ones replace it", async (t) => {
  const s = open((sink) => sink.send("g1"));
  t.deepEqual(await s.it.next(), { done: false, value: "g1" });
  s.sink().send("g2");
  s.sink().send("g3");
  s.sink().send("g4");
  t.deepEqual(await s.it.next(), { done: false, value: "g4" });
  // A reader that waits gets the next message as it comes.
  const waiting = s.it.next();
  s.sink().send("g5");
  t.deepEqual(await waiting, { done: false, value: "g5" });
  s.sink().end();
  t.deepEqual(await s.it.next(), { done: true, value: undefined });
});

test("the end comes after the last message; then the stream ends cleanly or with the end's error", async (t) => {
  const clean = open((sink) => {
    sink.send("g1");
    sink.end();
    sink.send("after the end");
  });
  t.deepEqual(await clean.it.next(), { done: false, value: "g1" });
  t.deepEqual(await clean.it.next(), { done: true, value: undefined });

  const revoked = new ConnectError("token revoked", Code.NotFound);
  const failed = open((sink) => {
    sink.send("g1");
    sink.end(revoked);
    sink.end();
  });
  t.deepEqual(await failed.it.next(), { done: false, value: "g1" });
  t.is(await t.throwsAsync(failed.it.next()), revoked);
  t.deepEqual(await failed.it.next(), { done: true, value: undefined });
});

test("a handler that throws at once ends the stream with that error", async (t) => {
  const bad = new Error("no target");
  const s = open(() => {
    throw bad;
  });
  t.is(await t.throwsAsync(s.it.next()), bad);
});

test("an abort ends a waiting reader at once with its reason, and leaves no listener", async (t) => {
  const s = open();
  const before = s.listeners();
  const waiting = s.it.next();
  await new Promise((resolve) => setImmediate(resolve));
  t.is(s.listeners(), before + 1, "the waiting reader listens for the abort");
  const reason = new ConnectError("the server is shutting down", Code.Unavailable);
  s.controller.abort(reason);
  t.is(await t.throwsAsync(waiting), reason);
  t.is(s.listeners(), before);
  // The handler's later sends go nowhere.
  s.sink().send("late");
  t.deepEqual(await s.it.next(), { done: true, value: undefined });
});

test("a reader that stops (return) leaves no listener, and later sends are dropped", async (t) => {
  const s = open((sink) => sink.send("g1"));
  t.deepEqual(await s.it.next(), { done: false, value: "g1" });
  t.deepEqual(await s.it.return(undefined), { done: true, value: undefined });
  t.is(s.listeners(), 0);
  s.sink().send("g2");
  s.sink().end(new Error("after the reader left"));
  t.deepEqual(await s.it.next(), { done: true, value: undefined });
});

test("pushStream() is the iterable form for connect-node and carries the push form", async (t) => {
  const push = (_r: string, _c: HandlerContext, sink: StreamSink<string>) => {
    sink.send("only");
    sink.end();
  };
  const method = pushStream(push);
  t.is(pushStreamOf(method), push as PushStreamImpl<unknown, unknown>);
  t.is(
    pushStreamOf(async function* () {}),
    undefined,
  );
  const got: string[] = [];
  for await (const m of method("r", { signal: new AbortController().signal } as HandlerContext)) {
    got.push(m);
  }
  t.deepEqual(got, ["only"]);
});
