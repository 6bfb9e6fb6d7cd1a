// Renewals and revocations made by other replicas reach this replica's cache
// and streams through the batched generation sync.

import test from "ava";
import { q, setup, tokens, vendErr, watchQ } from "../../test/support/vendor-harness.ts";
import { watchStream } from "../../test/support/watch-stream.ts";
import { sessionKey } from "./token.ts";

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
