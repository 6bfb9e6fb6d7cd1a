// The serving path: served from memory, stale-while-revalidate, one shared
// refresh for every caller of an expired token, lookups and bindings, and the
// credentials of a whole session.

import { getEventListeners } from "node:events";
import test from "ava";
import { scriptedRandom, T0 } from "../../test/support/fake-clock.ts";
import { deferred, permanent, transient } from "../../test/support/scripted-upstream.ts";
import {
  EXPIRED_AT,
  noSurprises,
  q,
  renewed,
  STALE_AT,
  seed,
  setup,
  tokens,
  vendErr,
} from "../../test/support/vendor-harness.ts";
import { sessionKey } from "./token.ts";

test("a fresh token is served from the store once, then from memory, with zero upstream calls", async (t) => {
  const h = setup();
  await seed(h);
  const first = await h.vendor.getValidTokens(q);
  t.is(first.generation, 1);
  t.is(first.tokens.accessToken, "at-1");
  await h.clock.advanceTo(STALE_AT - 1);
  for (let i = 0; i < 100; i++) t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count(), 0);
  t.is(h.store.counts.getActive, 1);
  t.is(h.vendor.stats().inflightRefreshes, 0);
  noSurprises(t, h);
});

test("concurrent first calls share one store read", async (t) => {
  const h = setup();
  await seed(h);
  const all = await Promise.all(Array.from({ length: 50 }, () => h.vendor.getValidTokens(q)));
  t.true(all.every((r) => r.generation === 1));
  t.is(h.store.counts.getActive, 1);
  noSurprises(t, h);
});

test("stored tokens are served at once, from memory", async (t) => {
  const h = setup();
  const generation = await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  t.is(generation, 1);
  const reads = h.store.counts.getActive;
  const r = await h.vendor.getValidTokens(q);
  t.is(r.generation, 1);
  t.is(r.reason, "stored");
  t.is(h.store.counts.getActive, reads);
  // A second store makes generation 2, which replaces the cached one.
  t.is(await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens({ accessToken: "at-new" }) }), 2);
  t.is((await h.vendor.getValidTokens(q)).tokens.accessToken, "at-new");
  t.is(h.upstream.count(), 0);
});

test("a stale token is returned at once and exactly one background refresh starts", async (t) => {
  const h = setup();
  await seed(h);
  await h.vendor.getValidTokens(q);
  await h.clock.advanceTo(STALE_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  // The refresh has not answered, yet every caller gets the current generation.
  const served = await Promise.all(Array.from({ length: 50 }, () => h.vendor.getValidTokens(q)));
  t.true(served.every((r) => r.generation === 1 && r.tokens.accessToken === "at-1"));
  const call = await d.called;
  t.is(call.provider, "idp");
  t.is(call.request.refreshToken, "rt-1");
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 1);
  t.is(h.vendor.stats().inflightRefreshes, 1);
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600, refreshToken: "rt-2" });
  await h.clock.settle();
  const after = await h.vendor.getValidTokens(q);
  t.is(after.generation, 2);
  t.is(after.reason, "refreshed");
  t.is(after.tokens.accessToken, "at-2");
  t.is(h.upstream.count("refresh"), 1);
  t.is(h.vendor.stats().inflightRefreshes, 0);
  noSurprises(t, h);
});

test("one ms before the refresh time nothing starts; at it the refresh does", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(STALE_AT - 1);
  await h.vendor.getValidTokens(q);
  await h.clock.settle();
  t.is(h.upstream.count(), 0);
  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(1);
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 1);
  t.is((await h.vendor.getValidTokens(q)).generation, 2);
  noSurprises(t, h);
});

test("the refresh time is jittered by the injected random: 0.5 makes a one-hour token stale 180 s early", async (t) => {
  const h = setup({ random: scriptedRandom(0.5) });
  await seed(h);
  await h.clock.advanceTo(T0 + 2_520_000 - 1);
  await h.vendor.getValidTokens(q);
  await h.clock.settle();
  t.is(h.upstream.count(), 0);
  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(1);
  await h.vendor.getValidTokens(q);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 1);
  noSurprises(t, h);
});

test("expired: 200 concurrent callers cause exactly one upstream refresh and all get the same generation", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  const calls = Array.from({ length: 200 }, () => h.vendor.getValidTokens(q));
  await d.called;
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 1);
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600, refreshToken: "rt-2" });
  const results = await Promise.all(calls);
  t.deepEqual(new Set(results.map((r) => r.generation)), new Set([2]));
  t.deepEqual(new Set(results.map((r) => r.tokens.accessToken)), new Set(["at-2"]));
  t.is(h.upstream.count("refresh"), 1);
  // One write: the seed and the renewal.
  t.is(h.store.counts.insert, 2);
  noSurprises(t, h);
});

test("one ms before expiry the stale token is still served; at expiry callers wait for the refresh in flight", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT - 1);
  const d = deferred();
  h.upstream.script("refresh", d);
  // Served at once, while the background refresh waits on the provider.
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await d.called;
  await h.clock.advance(1);
  // Now the token is expired for callers: they join the refresh in flight.
  let settled = false;
  const p = h.vendor.getValidTokens(q).finally(() => {
    settled = true;
  });
  await h.clock.settle();
  t.false(settled);
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600 });
  const r = await p;
  t.is(r.generation, 2);
  // Issued when the refresh started, one ms before expiry.
  t.is(r.tokens.issuedAt, EXPIRED_AT - 1);
  t.is(h.upstream.count("refresh"), 1);
  noSurprises(t, h);
});

test("a caller's abort abandons only its own wait: the shared refresh runs on under the service's signal", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  const caller = new AbortController();
  const a = h.vendor.getValidTokens(q, caller.signal);
  const b = h.vendor.getValidTokens(q);
  const call = await d.called;
  t.not(call.signal, caller.signal);
  const reason = new Error("caller cancelled");
  caller.abort(reason);
  t.is(await t.throwsAsync(a), reason);
  t.false(call.signal.aborted);
  t.is(getEventListeners(caller.signal, "abort").length, 0);
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600 });
  t.is((await b).generation, 2);
  // Persisted, and the aborted caller's retry is served from memory.
  t.is((await h.store.getActive(sessionKey("s1", "idp")))?.generation, 2);
  t.is((await h.vendor.getValidTokens(q)).tokens.accessToken, "at-2");
  t.is(h.upstream.count("refresh"), 1);
  noSurprises(t, h);
});

test("a caller whose signal aborted already is refused without starting a refresh", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const reason = new Error("too late");
  t.is(await t.throwsAsync(h.vendor.getValidTokens(q, AbortSignal.abort(reason))), reason);
  await h.clock.settle();
  t.is(h.upstream.count(), 0);
  t.is(h.vendor.stats().inflightRefreshes, 0);
});

test("aborting the service signal aborts the shared refresh", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  const p = h.vendor.getValidTokens(q);
  const call = await d.called;
  h.service.abort(new Error("SIGTERM"));
  t.true(call.signal.aborted);
  const err = await vendErr(t, p, "UPSTREAM_UNAVAILABLE");
  t.is(err.message, "the service is shutting down");
});

test("getAllUpstreamCredentials: one healthy and one failing provider, in one store round trip", async (t) => {
  const h = setup();
  await seed(h, {}, "s1", "idp");
  await seed(h, {}, "s1", "other");
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.scriptFor("idp", "refresh", renewed(2));
  h.upstream.scriptFor("other", "refresh", transient());
  const { credentials, failures } = await h.vendor.getAllUpstreamCredentials("s1");
  t.deepEqual([...credentials.keys()], ["idp"]);
  t.is(credentials.get("idp")?.generation, 2);
  t.deepEqual(failures, [
    { provider: "other", code: "UPSTREAM_UNAVAILABLE", message: 'provider "other" is unavailable' },
  ]);
  t.is(h.store.counts.getSession, 1);
  noSurprises(t, h);
});

test("getAllUpstreamCredentials: fresh tokens cost one store read and no upstream call", async (t) => {
  const h = setup();
  await seed(h, {}, "s1", "idp");
  await seed(h, {}, "s1", "other");
  // An unconfigured provider in the store is left out, not an error.
  await seed(h, {}, "s1", "retired");
  // Another session is not read.
  await seed(h, {}, "s2", "idp");
  const { credentials, failures } = await h.vendor.getAllUpstreamCredentials("s1");
  t.deepEqual([...credentials.keys()].sort(), ["idp", "other"]);
  t.deepEqual(failures, []);
  t.deepEqual(h.store.counts, { getActive: 0, getSession: 1, insert: 4 });
  t.is(h.upstream.count(), 0);
});

test("getAllUpstreamCredentials: a rejected refresh is listed as REFRESH_FAILED, a token without a refresh token as NO_REFRESH_TOKEN", async (t) => {
  const h = setup();
  await seed(h, {}, "s1", "idp");
  await seed(h, { refreshToken: undefined }, "s1", "other");
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.scriptFor("idp", "refresh", permanent());
  const { credentials, failures } = await h.vendor.getAllUpstreamCredentials("s1");
  t.is(credentials.size, 0);
  t.deepEqual(
    failures.map((f) => [f.provider, f.code]),
    [
      ["idp", "REFRESH_FAILED"],
      ["other", "NO_REFRESH_TOKEN"],
    ],
  );
  noSurprises(t, h);
});

test("getAllUpstreamCredentials of an unknown session: an empty map, not an error", async (t) => {
  const h = setup();
  const res = await h.vendor.getAllUpstreamCredentials("nobody");
  t.is(res.credentials.size, 0);
  t.deepEqual(res.failures, []);
});
