// The watch hub: latest-value fan-out, ends, counts, and no listener left behind.

import { getEventListeners } from "node:events";
import test from "ava";
import { LatestValue } from "../../test/support/watch-stream.ts";
import { createWatchHub, type WatchHub } from "./watch-hub.ts";

const never = () => new AbortController().signal;

/** A listener of `id` read by pulling, as a slow stream reads it. */
function subscribe<E>(hub: WatchHub<E>, id: string) {
  const queue = new LatestValue<E>();
  const off = hub.listen(id, queue);
  return { next: (signal: AbortSignal) => queue.take(signal), close: off };
}
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Whether `p` has settled after pending callbacks ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await tick();
  return done;
}

test("a published event reaches every subscriber of its id and no other", async (t) => {
  const hub = createWatchHub<number>();
  const a = subscribe(hub, "k");
  const b = subscribe(hub, "k");
  const other = subscribe(hub, "j");
  hub.publish("k", 1);
  t.is(await a.next(never()), 1);
  t.is(await b.next(never()), 1);
  const ac = new AbortController();
  const pending = other.next(ac.signal);
  t.false(await settled(pending));
  ac.abort();
  t.is(await pending, undefined);
});

test("next() waits for the next publish", async (t) => {
  const hub = createWatchHub<string>();
  const sub = subscribe(hub, "k");
  const p = sub.next(never());
  t.false(await settled(p));
  hub.publish("k", "a");
  t.is(await p, "a");
});

test("a slow subscriber only sees the latest event", async (t) => {
  const hub = createWatchHub<number>();
  const slow = subscribe(hub, "k");
  const fast = subscribe(hub, "k");
  const seen: number[] = [];
  for (let i = 1; i <= 5; i++) {
    hub.publish("k", i);
    seen.push((await fast.next(never()))!);
  }
  t.deepEqual(seen, [1, 2, 3, 4, 5]);
  t.is(await slow.next(never()), 5);
  // Taken once: the next call waits for something newer.
  const ac = new AbortController();
  const again = slow.next(ac.signal);
  t.false(await settled(again));
  ac.abort();
  t.is(await again, undefined);
});

test("next() with an aborted signal returns undefined at once, keeping a pending event for later", async (t) => {
  const hub = createWatchHub<number>();
  const sub = subscribe(hub, "k");
  t.is(await sub.next(AbortSignal.abort()), undefined);
  hub.publish("k", 7);
  // An event already there is returned even if the signal has aborted.
  t.is(await sub.next(AbortSignal.abort()), 7);
});

test("aborting a waiting next() resolves undefined and removes its abort listener", async (t) => {
  const hub = createWatchHub<number>();
  const sub = subscribe(hub, "k");
  const ac = new AbortController();
  const p = sub.next(ac.signal);
  await tick();
  t.is(getEventListeners(ac.signal, "abort").length, 1);
  ac.abort();
  t.is(await p, undefined);
  t.is(getEventListeners(ac.signal, "abort").length, 0);
});

test("a next() woken by publish removes its abort listener", async (t) => {
  const hub = createWatchHub<number>();
  const sub = subscribe(hub, "k");
  const ac = new AbortController();
  for (let i = 0; i < 1000; i++) {
    const p = sub.next(ac.signal);
    hub.publish("k", i);
    t.is(await p, i);
  }
  t.is(getEventListeners(ac.signal, "abort").length, 0);
});

test("end() throws its reason from a waiting next() and unsubscribes", async (t) => {
  const hub = createWatchHub<number>();
  const sub = subscribe(hub, "k");
  const p = sub.next(never());
  const reason = new Error("revoked");
  hub.end("k", reason);
  t.is(await t.throwsAsync(p), reason);
  t.false(hub.has("k"));
  t.is(hub.subscriberCount(), 0);
  // Later calls keep throwing the same reason rather than hanging.
  t.is(await t.throwsAsync(sub.next(never())), reason);
});

test("end() delivers an event published before it, then the reason", async (t) => {
  const hub = createWatchHub<number>();
  const sub = subscribe(hub, "k");
  hub.publish("k", 3);
  const reason = new Error("gone");
  hub.end("k", reason);
  t.is(await sub.next(never()), 3);
  t.is(await t.throwsAsync(sub.next(never())), reason);
});

test("end() of one id leaves the others; endAll() ends all", async (t) => {
  const hub = createWatchHub<number>();
  const a = subscribe(hub, "a");
  const b = subscribe(hub, "b");
  const c = subscribe(hub, "c");
  hub.end("a", new Error("a"));
  t.deepEqual([...hub.ids()].sort(), ["b", "c"]);
  const reason = new Error("shutdown");
  hub.endAll(reason);
  t.is(await t.throwsAsync(b.next(never())), reason);
  t.is(await t.throwsAsync(c.next(never())), reason);
  t.is((await t.throwsAsync(a.next(never())))?.message, "a");
  t.is(hub.idCount(), 0);
  t.is(hub.subscriberCount(), 0);
});

test("publish and end of an id without subscribers do nothing", (t) => {
  const hub = createWatchHub<number>();
  hub.publish("nobody", 1);
  hub.end("nobody", new Error("x"));
  t.is(hub.idCount(), 0);
  t.false(hub.has("nobody"));
});

test("a subscriber that arrives after a publish does not see it", async (t) => {
  const hub = createWatchHub<number>();
  subscribe(hub, "k");
  hub.publish("k", 1);
  const late = subscribe(hub, "k");
  const ac = new AbortController();
  const p = late.next(ac.signal);
  t.false(await settled(p));
  ac.abort();
  t.is(await p, undefined);
});

test("onFirst and onLast fire once per id as it gains its first and loses its last subscriber", (t) => {
  const calls: string[] = [];
  const hub = createWatchHub<number>({
    onFirst: (id) => calls.push(`first ${id}`),
    onLast: (id) => calls.push(`last ${id}`),
  });
  const a1 = subscribe(hub, "a");
  const a2 = subscribe(hub, "a");
  const b = subscribe(hub, "b");
  t.deepEqual(calls, ["first a", "first b"]);
  a1.close();
  t.deepEqual(calls, ["first a", "first b"]);
  a2.close();
  a2.close(); // idempotent
  t.deepEqual(calls, ["first a", "first b", "last a"]);
  hub.end("b", new Error("x"));
  b.close(); // after end: nothing more
  t.deepEqual(calls, ["first a", "first b", "last a", "last b"]);
  subscribe(hub, "a");
  t.deepEqual(calls, ["first a", "first b", "last a", "last b", "first a"]);
});

test("counts follow subscribe and close; 1,000 cycles leave nothing", (t) => {
  const hub = createWatchHub<number>();
  const subs = [subscribe(hub, "a"), subscribe(hub, "a"), subscribe(hub, "b")];
  t.is(hub.idCount(), 2);
  t.is(hub.subscriberCount(), 3);
  for (const s of subs) s.close();
  t.is(hub.idCount(), 0);
  t.is(hub.subscriberCount(), 0);
  for (let i = 0; i < 1000; i++) subscribe(hub, `k${i % 7}`).close();
  t.is(hub.idCount(), 0);
  t.is(hub.subscriberCount(), 0);
  t.deepEqual([...hub.ids()], []);
});

/** A hub whose fan-out chunks run only when the test says so. */
function manualHub(chunkSize: number) {
  const queued: (() => void)[] = [];
  const hub = createWatchHub<number>({ chunkSize, defer: (run) => queued.push(run) });
  const step = () => queued.shift()?.();
  return { hub, queued, step };
}

function recorder() {
  const seen: number[] = [];
  const ends: Error[] = [];
  return { seen, ends, next: (e: number) => seen.push(e), end: (r: Error) => ends.push(r) };
}

test("push: a large fan-out runs in chunks, the first at once, the rest one deferred turn each", (t) => {
  const { hub, queued, step } = manualHub(2);
  const ls = Array.from({ length: 5 }, () => recorder());
  for (const l of ls) hub.listen("k", l);
  hub.publish("k", 1);
  t.deepEqual(
    ls.map((l) => l.seen.length),
    [1, 1, 0, 0, 0],
  );
  t.is(queued.length, 1);
  step();
  t.deepEqual(
    ls.map((l) => l.seen.length),
    [1, 1, 1, 1, 0],
  );
  step();
  t.deepEqual(
    ls.map((l) => l.seen),
    [[1], [1], [1], [1], [1]],
  );
  t.is(queued.length, 0);
});

test("push: a newer event takes over an older fan-out still running, so nobody gets the older one late", (t) => {
  const { hub, step, queued } = manualHub(2);
  const ls = Array.from({ length: 4 }, () => recorder());
  for (const l of ls) hub.listen("k", l);
  hub.publish("k", 1);
  hub.publish("k", 2);
  while (queued.length > 0) step();
  t.deepEqual(
    ls.map((l) => l.seen),
    [[1, 2], [1, 2], [2], [2]],
  );
});

test("push: a listener removed or ended mid fan-out gets nothing more, and end stops the fan-out", (t) => {
  const { hub, step, queued } = manualHub(1);
  const a = recorder();
  const b = recorder();
  const c = recorder();
  hub.listen("k", a);
  const offB = hub.listen("k", b);
  hub.listen("k", c);
  hub.publish("k", 1);
  offB();
  while (queued.length > 0) step();
  t.deepEqual([a.seen, b.seen, c.seen], [[1], [], [1]]);
  hub.publish("k", 2);
  const reason = new Error("revoked");
  hub.end("k", reason);
  while (queued.length > 0) step();
  t.deepEqual([a.seen, c.seen], [[1, 2], [1]]);
  t.deepEqual([a.ends, b.ends, c.ends], [[reason], [], [reason]]);
  t.is(hub.subscriberCount(), 0);
  t.false(hub.has("k"));
});

test("push: a listener added during a fan-out is not in it; the next publish reaches it", (t) => {
  const { hub, step, queued } = manualHub(1);
  const a = recorder();
  const b = recorder();
  hub.listen("k", a);
  hub.listen("k", b);
  hub.publish("k", 1);
  const late = recorder();
  hub.listen("k", late);
  while (queued.length > 0) step();
  t.deepEqual(late.seen, []);
  hub.publish("k", 2);
  while (queued.length > 0) step();
  t.deepEqual([a.seen, b.seen, late.seen], [[1, 2], [1, 2], [2]]);
});
