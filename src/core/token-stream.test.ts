// WatchToken streams in the core: first message, pushes, ends, slots and
// nothing left behind.

import { getEventListeners } from "node:events";
import test from "ava";
import { scriptedRandom, T0 } from "../../test/support/fake-clock.ts";
import { deferred } from "../../test/support/scripted-upstream.ts";
import {
  EXPIRED_AT,
  idle,
  noSurprises,
  nothingLeft,
  q,
  renewed,
  seed,
  setup,
  tokens,
  vendErr,
  watchQ,
} from "../../test/support/vendor-harness.ts";
import { watchStream } from "../../test/support/watch-stream.ts";
import { TokenVendError } from "./errors.ts";
import type { WatchEvent } from "./token-stream.ts";

test("watch: the current token first, then a renewal when the timer fires at the jittered refresh time", async (t) => {
  const h = setup({ random: scriptedRandom(0.5) });
  await seed(h);
  const ac = new AbortController();
  const stream = watchStream(h.vendor, watchQ, ac.signal);
  const first = await stream.next();
  t.false(first.done);
  t.is(first.value?.reason, "initial");
  t.is(first.value?.record.generation, 1);
  t.is(h.clock.pendingTimers(), 1);
  // random 0.5: 2 700 s − 0.5 × 0.1 × 3 600 s = 2 520 s after issuance.
  t.is(h.clock.nextDueInMs(), 2_520_000);
  t.like(h.vendor.stats(), {
    cachedKeys: 1,
    inflightRefreshes: 0,
    watchers: 1,
    timers: 1,
    streams: 1,
  });

  const next = stream.next();
  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(2_519_999);
  t.is(h.upstream.count(), 0);
  await h.clock.advance(1);
  t.is(h.upstream.count("refresh"), 1);
  const ev = await next;
  t.is(ev.value?.reason, "refreshed");
  t.is(ev.value?.record.generation, 2);
  t.is(ev.value?.record.tokens.accessToken, "at-2");
  t.is(ev.value?.record.tokens.issuedAt, T0 + 2_520_000);
  // The next renewal is armed from the new token.
  t.is(h.clock.pendingTimers(), 1);
  t.is(h.clock.nextDueInMs(), 2_520_000);

  // And the one after that, from the rotated refresh token.
  const third = stream.next();
  h.upstream.script("refresh", renewed(3));
  await h.clock.advance(2_520_000);
  t.is((await third).value?.record.generation, 3);
  t.deepEqual(
    h.upstream.calls("refresh").map((c) => c.request.refreshToken),
    ["rt-1", "rt-2"],
  );
  const end = stream.next();
  ac.abort();
  t.true((await end).done);
  t.deepEqual(idle(h), nothingLeft);
  noSurprises(t, h);
});

test("watch (push): the current token, then each stored generation by a plain call; cancel ends it once and frees its slot", async (t) => {
  const h = setup();
  await seed(h);
  const ac = new AbortController();
  const seen: string[] = [];
  const ends: (Error | undefined)[] = [];
  const cancel = h.vendor.watch(
    watchQ,
    {
      next: (ev) => seen.push(`${ev.reason} ${ev.record.generation}`),
      end: (err) => ends.push(err),
    },
    ac.signal,
  );
  t.is(h.vendor.stats().streams, 1);
  await h.clock.advance(0);
  t.deepEqual(seen, ["initial 1"]);
  // A stored generation reaches the listener inside the store call's fan-out.
  await h.vendor.storeUpstreamTokens({ sessionId: "s1", provider: "idp", tokens: tokens() });
  t.deepEqual(seen, ["initial 1", "stored 2"]);
  cancel();
  cancel();
  ac.abort();
  t.deepEqual(ends, [undefined]);
  await h.vendor.storeUpstreamTokens({ sessionId: "s1", provider: "idp", tokens: tokens() });
  t.deepEqual(seen, ["initial 1", "stored 2"]);
  t.deepEqual(idle(h), nothingLeft);
  t.deepEqual(getEventListeners(ac.signal, "abort"), []);
});

test("watch (push): an unknown provider, a full replica and an aborted signal end the listener at once", async (t) => {
  const h = setup({ maxStreams: 1 });
  await seed(h);
  const ends: (Error | undefined)[] = [];
  const listener = {
    next: () => t.fail("no event expected"),
    end: (e: Error | undefined) => ends.push(e),
  };
  h.vendor.watch({ ...watchQ, provider: "nope" }, listener, new AbortController().signal);
  const ac = new AbortController();
  h.vendor.watch(watchQ, { next: () => {}, end: () => {} }, ac.signal);
  h.vendor.watch(watchQ, listener, new AbortController().signal);
  h.vendor.watch(watchQ, listener, AbortSignal.abort());
  t.deepEqual(
    ends.map((e) => (e instanceof TokenVendError ? e.code : e)),
    ["PROVIDER_NOT_FOUND", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"],
  );
  ac.abort();
  h.vendor.watch(watchQ, listener, AbortSignal.abort());
  t.deepEqual(ends.at(-1), undefined);
  t.is(ends.length, 4);
  t.deepEqual(idle(h), nothingLeft);
});

test("watch: a slow subscriber skips to the latest generation", async (t) => {
  const h = setup();
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  const ac = new AbortController();
  const slow = watchStream(h.vendor, watchQ, ac.signal);
  const fast = watchStream(h.vendor, watchQ, ac.signal);
  t.is((await slow.next()).value?.record.generation, 1);
  t.is((await fast.next()).value?.record.generation, 1);
  const seen: number[] = [];
  for (let i = 2; i <= 4; i++) {
    const next = fast.next();
    await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens({ accessToken: `at-${i}` }) });
    const ev = (await next).value as WatchEvent;
    seen.push(ev.record.generation);
    t.is(ev.reason, "stored");
  }
  t.deepEqual(seen, [2, 3, 4]);
  const ev = (await slow.next()).value as WatchEvent;
  t.is(ev.record.generation, 4);
  t.is(ev.record.tokens.accessToken, "at-4");
  await slow.return(undefined);
  await fast.return(undefined);
  t.deepEqual(idle(h), nothingLeft);
});

test("watch: aborting the signal ends a waiting stream and leaves no watcher, timer or stream", async (t) => {
  const h = setup();
  await seed(h);
  const ac = new AbortController();
  const stream = watchStream(h.vendor, watchQ, ac.signal);
  await stream.next();
  const next = stream.next();
  await h.clock.settle();
  ac.abort();
  t.deepEqual(await next, { done: true, value: undefined });
  t.deepEqual(idle(h), nothingLeft);
  t.is(getEventListeners(ac.signal, "abort").length, 0);
});

test("watch: return() on the generator leaves no watcher, timer or stream", async (t) => {
  const h = setup();
  await seed(h);
  const stream = watchStream(h.vendor, watchQ, new AbortController().signal);
  await stream.next();
  t.is(h.vendor.stats().timers, 1);
  t.deepEqual(await stream.return(undefined), { done: true, value: undefined });
  t.deepEqual(idle(h), nothingLeft);
});

test("watch: 1,000 subscribe/cancel cycles leave zero watchers, timers, streams and listeners", async (t) => {
  const h = setup();
  await seed(h);
  const shared = new AbortController();
  for (let i = 0; i < 1000; i++) {
    if (i % 2 === 0) {
      const s = watchStream(h.vendor, watchQ, shared.signal);
      await s.next();
      await s.return(undefined);
    } else {
      const ac = new AbortController();
      const s = watchStream(h.vendor, watchQ, ac.signal);
      await s.next();
      const next = s.next();
      ac.abort();
      t.true((await next).done);
    }
  }
  t.deepEqual(idle(h), nothingLeft);
  t.is(getEventListeners(shared.signal, "abort").length, 0);
  t.is(h.store.counts.getActive, 1);
  t.is(h.upstream.count(), 0);
});

test("watch: close() ends streams with SHUTTING_DOWN and refuses new ones", async (t) => {
  const h = setup();
  await seed(h);
  await seed(h, {}, "s2", "idp");
  const ac = new AbortController();
  const a = watchStream(h.vendor, watchQ, ac.signal);
  const b = watchStream(h.vendor, { kind: "session", sessionId: "s2", provider: "idp" }, ac.signal);
  await a.next();
  await b.next();
  t.is(h.clock.pendingTimers(), 2);
  const pa = a.next();
  const pb = b.next();
  await h.vendor.close();
  await vendErr(t, pa, "SHUTTING_DOWN");
  await vendErr(t, pb, "SHUTTING_DOWN");
  t.deepEqual(idle(h), nothingLeft);
  await vendErr(t, watchStream(h.vendor, watchQ, ac.signal).next(), "SHUTTING_DOWN");
  t.deepEqual(idle(h), nothingLeft);
  // Unary calls go on.
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
});

test("watch: close() while a stream waits for its first token: that token is delivered, then SHUTTING_DOWN, and nothing is armed", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  const stream = watchStream(h.vendor, watchQ, new AbortController().signal);
  const first = stream.next();
  await d.called;
  await h.vendor.close();
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600 });
  t.is((await first).value?.record.generation, 2);
  await vendErr(t, stream.next(), "SHUTTING_DOWN");
  t.deepEqual(idle(h), nothingLeft);
});

test("watch: maxStreams bounds concurrent streams with RESOURCE_EXHAUSTED", async (t) => {
  const h = setup({ maxStreams: 2 });
  await seed(h);
  const ac = new AbortController();
  const a = watchStream(h.vendor, watchQ, ac.signal);
  const b = watchStream(h.vendor, watchQ, ac.signal);
  await a.next();
  await b.next();
  const err = await vendErr(
    t,
    watchStream(h.vendor, watchQ, ac.signal).next(),
    "RESOURCE_EXHAUSTED",
  );
  t.is(err.message, "this replica serves at most 2 streams");
  t.is(h.vendor.stats().streams, 2);
  await a.return(undefined);
  const c = watchStream(h.vendor, watchQ, ac.signal);
  t.is((await c.next()).value?.reason, "initial");
  await b.return(undefined);
  await c.return(undefined);
  t.deepEqual(idle(h), nothingLeft);
});

test("watch: a stream whose first lookup fails releases its slot", async (t) => {
  const h = setup({ maxStreams: 1 });
  const ac = new AbortController();
  for (let i = 0; i < 3; i++) {
    await vendErr(t, watchStream(h.vendor, watchQ, ac.signal).next(), "SESSION_NOT_FOUND");
  }
  t.deepEqual(idle(h), nothingLeft);
});

test("watch: revocation ends the streams with SESSION_NOT_FOUND", async (t) => {
  const h = setup();
  await seed(h);
  const stream = watchStream(h.vendor, watchQ, new AbortController().signal);
  await stream.next();
  const next = stream.next();
  await h.vendor.revokeSession({ sessionId: "s1", revokeUpstream: false });
  await vendErr(t, next, "SESSION_NOT_FOUND");
  t.deepEqual(idle(h), nothingLeft);
});
