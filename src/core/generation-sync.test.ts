// Renewals and revocations made by other replicas reach this replica's cache
// and streams: through the store's change feed (a cost of the changes, not of
// the cached keys), with one batched check of every key when the feed has a
// gap or the store has no feed.

import test from "ava";
import {
  createCountingStore,
  q,
  setup,
  tokens,
  vendErr,
  watchQ,
} from "../../test/support/vendor-harness.ts";
import { watchStream } from "../../test/support/watch-stream.ts";
import { keyId, sessionKey } from "./token.ts";
import type { ChangeFeed, StoreChange, TokenStore } from "./token-store.ts";

test("sync: a renewal and a revocation made by another replica reach this replica's cache and streams", async (t) => {
  const h = setup({ extra: { syncIntervalMs: 1_000 } });
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  const stream = watchStream(h.vendor, watchQ, new AbortController().signal);
  await stream.next();
  const key = sessionKey("s1", "idp");
  await h.store.insert({
    key,
    generation: 2,
    reason: "refreshed",
    tokens: tokens({ accessToken: "at-elsewhere" }),
  });
  const next = stream.next();
  await h.clock.advance(999);
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.advance(1);
  const ev = await next;
  t.is(ev.value?.record.tokens.accessToken, "at-elsewhere");
  t.is(ev.value?.reason, "refreshed");
  t.is((await h.vendor.getValidTokens(q)).generation, 2);

  await h.store.insert({ key, generation: 3, reason: "revoked" });
  const end = stream.next();
  await h.clock.advance(1_000);
  await vendErr(t, end, "SESSION_NOT_FOUND");
  await vendErr(t, h.vendor.getValidTokens(q), "SESSION_NOT_FOUND");
  t.is(h.vendor.stats().syncs, 2);
  t.is(h.upstream.count(), 0);
  await h.vendor.close();
  t.is(h.clock.pendingTimers(), 0);
});

test("sync: a key unused for longer than idleEvictMs and not watched is dropped from the cache", async (t) => {
  const h = setup({ extra: { syncIntervalMs: 1_000, idleEvictMs: 10_000 } });
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  await h.vendor.storeUpstreamTokens({ sessionId: "s2", provider: "idp", tokens: tokens() });
  const watched = watchStream(
    h.vendor,
    { kind: "session", sessionId: "s2", provider: "idp" },
    new AbortController().signal,
  );
  await watched.next();
  await vendErr(
    t,
    h.vendor.getValidTokens({ sessionId: "ghost", provider: "idp" }),
    "SESSION_NOT_FOUND",
  );
  // The unknown id was never kept; the two stored keys are.
  t.is(h.vendor.stats().cachedKeys, 2);
  await h.clock.advance(10_000);
  t.is(h.vendor.stats().cachedKeys, 2);
  await h.clock.advance(1_000);
  t.is(h.vendor.stats().cachedKeys, 1);
  // Dropped is not lost: the next call reads the store again.
  const reads = h.store.counts.getActive;
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  t.is(h.store.counts.getActive, reads + 1);
  await watched.return(undefined);
  await h.vendor.close();
  t.is(h.clock.pendingTimers(), 0);
});

test("sync: stops when the service's signal aborts, with nothing left armed", async (t) => {
  const h = setup({ extra: { syncIntervalMs: 1_000 } });
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  await h.clock.advance(1_000);
  t.is(h.vendor.stats().syncs, 1);
  h.service.abort();
  await h.clock.advance(5_000);
  t.is(h.vendor.stats().syncs, 1);
  t.is(h.clock.pendingTimers(), 0);
});

/** A store whose change feed is scripted: what `push` and `gap` say, with reads counted. */
function feedStore() {
  const inner = createCountingStore();
  let pending: StoreChange[] = [];
  let gap = false;
  const counts = { feedReads: 0, activeGenerations: 0 };
  const feed: ChangeFeed = {
    method: "change-log",
    async read() {
      counts.feedReads++;
      const batch = { changes: pending, gap };
      pending = [];
      gap = false;
      return batch;
    },
    close: async () => {},
  };
  const store: TokenStore = {
    ...inner,
    shared: true,
    openChangeFeed: () => feed,
    activeGenerations(keys, o) {
      counts.activeGenerations++;
      return inner.activeGenerations(keys, o);
    },
  };
  return {
    store,
    inner,
    counts,
    push: (...changes: StoreChange[]) => pending.push(...changes),
    gap: () => {
      gap = true;
    },
  };
}

test("sync by changes: a change to a cached key is read once and adopted; old, repeated and uncached changes cost nothing", async (t) => {
  const f = feedStore();
  const h = setup({ extra: { syncIntervalMs: 1_000, store: f.store } });
  for (let i = 0; i < 1_000; i++) {
    await h.vendor.storeUpstreamTokens({ sessionId: `s${i}`, provider: "idp", tokens: tokens() });
  }
  const key = sessionKey("s7", "idp");
  await f.inner.insert({
    key,
    generation: 2,
    reason: "refreshed",
    tokens: tokens({ accessToken: "at-2" }),
  });
  const reads = f.inner.counts.getActive;
  const batched = f.counts.activeGenerations;
  f.push(
    { id: keyId(key), generation: 2, reason: "refreshed" },
    { id: keyId(key), generation: 2, reason: "refreshed" },
    { id: keyId(sessionKey("s8", "idp")), generation: 1, reason: "stored" },
    { id: keyId(sessionKey("not-cached", "idp")), generation: 5, reason: "refreshed" },
  );
  await h.clock.advance(1_000);
  t.is(f.inner.counts.getActive, reads + 1);
  t.is(f.counts.activeGenerations, batched, "1,000 cached keys, no query about them");
  t.is(
    (await h.vendor.getValidTokens({ sessionId: "s7", provider: "idp" })).tokens.accessToken,
    "at-2",
  );
  // Seen again (the change log's margin): nothing newer than what is cached, so no read.
  f.push({ id: keyId(key), generation: 2, reason: "refreshed" });
  await h.clock.advance(1_000);
  t.is(f.inner.counts.getActive, reads + 1);
  t.is(f.counts.feedReads, 2);
  t.is(h.vendor.stats().syncs, 2);
  await h.vendor.close();
});

test("sync by changes: a revocation elsewhere ends the key's streams with NOT_FOUND", async (t) => {
  const f = feedStore();
  const h = setup({ extra: { syncIntervalMs: 1_000, store: f.store } });
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  const stream = watchStream(h.vendor, watchQ, new AbortController().signal);
  await stream.next();
  const key = sessionKey("s1", "idp");
  await f.inner.insert({ key, generation: 2, reason: "revoked" });
  f.push({ id: keyId(key), generation: 2, reason: "revoked" });
  const end = stream.next();
  await h.clock.advance(1_000);
  await vendErr(t, end, "SESSION_NOT_FOUND");
  await h.vendor.close();
});

test("sync by changes: a gap in the feed checks every cached key once, in one batched query", async (t) => {
  const f = feedStore();
  const h = setup({ extra: { syncIntervalMs: 1_000, store: f.store } });
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  await h.vendor.storeUpstreamTokens({ sessionId: "s2", provider: "idp", tokens: tokens() });
  const key = sessionKey("s2", "idp");
  const batched = f.counts.activeGenerations;
  // Written while the feed was not looking: no change says so.
  await f.inner.insert({
    key,
    generation: 2,
    reason: "refreshed",
    tokens: tokens({ accessToken: "missed" }),
  });
  await h.clock.advance(1_000);
  t.is(f.counts.activeGenerations, batched);
  t.is((await h.vendor.getValidTokens({ sessionId: "s2", provider: "idp" })).generation, 1);
  f.gap();
  await h.clock.advance(1_000);
  t.is(f.counts.activeGenerations, batched + 1);
  t.is(
    (await h.vendor.getValidTokens({ sessionId: "s2", provider: "idp" })).tokens.accessToken,
    "missed",
  );
  await h.clock.advance(1_000);
  t.is(f.counts.activeGenerations, batched + 1, "a gap is checked once");
  await h.vendor.close();
  t.is(h.clock.pendingTimers(), 0);
});
