// The token vendor under a fake clock, a scripted random and a scripted upstream:
// caching, single-flight refresh under the service's signal, stale-while-revalidate,
// backoff, permanent errors, persist-before-return, revocation, watch streams and
// the cluster paths (claims, generation sync), each with exact times, generations
// and call counts. No real timer decides anything here.

import { getEventListeners } from "node:events";
import test, { type ExecutionContext } from "ava";
import {
  createFakeClock,
  type FakeClock,
  scriptedRandom,
  T0,
} from "../../test/support/fake-clock.ts";
import {
  createScriptedUpstream,
  deferred,
  ok,
  permanent,
  type ScriptedUpstream,
  transient,
} from "../../test/support/scripted-upstream.ts";
import { watchStream } from "../../test/support/watch-stream.ts";
import { createMemoryStore } from "../store/memory-store.ts";
import type { Random } from "./clock.ts";
import { TokenVendError } from "./errors.ts";
import { defaultLifetimePolicy } from "./lifetime.ts";
import { sessionKey, type TokenSet } from "./token.ts";
import type { TokenStore } from "./token-store.ts";
import {
  createTokenVendor,
  defaultBackoffPolicy,
  type GrantSettings,
  type ProviderSettings,
  renewedTokens,
  type TokenVendor,
  type TokenVendorOptions,
  type WatchEvent,
} from "./token-vendor.ts";
import { UpstreamError } from "./upstream.ts";

const hour = 3_600_000;
/** With random 0: the end of the fresh window of a one-hour token issued at T0. */
const STALE_AT = T0 + 2_700_000;
/** Expiry minus the 30 s clock skew. */
const EXPIRED_AT = T0 + hour - 30_000;

const q = { sessionId: "s1", provider: "idp" } as const;

const settings: ProviderSettings = {
  lifetime: defaultLifetimePolicy,
  backoff: defaultBackoffPolicy,
};
const providers = new Map<string, ProviderSettings>([
  ["idp", settings],
  ["other", settings],
]);
const grants = new Map<string, GrantSettings>([
  ["reports", { provider: "idp", scopes: ["reports.read"], audience: "https://api.example" }],
]);

function tokens(over: Partial<TokenSet> = {}): TokenSet {
  return {
    accessToken: "at-1",
    refreshToken: "rt-1",
    idToken: "id-1",
    tokenType: "Bearer",
    scopes: ["openid", "offline_access"],
    issuedAt: T0,
    expiresAt: T0 + hour,
    subject: "alice",
    clientId: "web",
    ...over,
  };
}

/** A one-hour token response from the provider. */
const renewed = (n: number, rotate = true) =>
  ok({
    accessToken: `at-${n}`,
    expiresInSec: 3600,
    ...(rotate ? { refreshToken: `rt-${n}` } : {}),
  });

interface CountingStore extends TokenStore {
  /** How many calls of each method reached the store. */
  readonly counts: Record<"getActive" | "getSession" | "insert", number>;
  /** The next `n` inserts throw, as a store that is down does. */
  failInserts(n: number): void;
}

/** The memory store, counting reads and failing inserts on demand. */
function createCountingStore(): CountingStore {
  const inner = createMemoryStore();
  const counts = { getActive: 0, getSession: 0, insert: 0 };
  let failing = 0;
  return {
    ...inner,
    counts,
    failInserts(n) {
      failing = n;
    },
    getActive(key, o) {
      counts.getActive++;
      return inner.getActive(key, o);
    },
    getSession(id, o) {
      counts.getSession++;
      return inner.getSession(id, o);
    },
    async insert(record, o) {
      counts.insert++;
      if (failing > 0) {
        failing--;
        throw new Error("connection reset");
      }
      return inner.insert(record, o);
    },
  };
}

interface Harness {
  readonly clock: FakeClock;
  readonly upstream: ScriptedUpstream;
  readonly store: CountingStore;
  readonly vendor: TokenVendor;
  readonly service: AbortController;
}

function setup(
  o: { random?: Random; maxStreams?: number; extra?: Partial<TokenVendorOptions> } = {},
): Harness {
  const clock = createFakeClock({ nowMs: T0 });
  const upstream = createScriptedUpstream();
  const store = createCountingStore();
  const service = new AbortController();
  const vendor = createTokenVendor({
    store,
    upstream,
    providers,
    grants,
    clock,
    random: o.random ?? scriptedRandom(0),
    signal: service.signal,
    ...(o.maxStreams !== undefined ? { maxStreams: o.maxStreams } : {}),
    ...o.extra,
  });
  return { clock, upstream, store, vendor, service };
}

/** Stores generation 1 of a session directly in the store, as another replica would: the vendor's cache is cold. */
async function seed(h: Harness, over: Partial<TokenSet> = {}, sessionId = "s1", provider = "idp") {
  await h.store.insert({
    key: sessionKey(sessionId, provider),
    generation: 1,
    reason: "stored",
    tokens: tokens(over),
  });
}

/** No upstream call happened that the test did not script. */
function noSurprises(t: ExecutionContext, h: Harness) {
  t.deepEqual(
    h.upstream.unscripted.map((c) => `${c.method} ${c.provider}`),
    [],
    "unscripted upstream calls",
  );
}

async function vendErr(
  t: ExecutionContext,
  p: Promise<unknown> | (() => Promise<unknown>),
  code: TokenVendError["code"],
): Promise<TokenVendError> {
  const expectation = { instanceOf: TokenVendError };
  const err = await (typeof p === "function"
    ? t.throwsAsync(p, expectation)
    : t.throwsAsync(p, expectation));
  t.is(err?.code, code);
  return err as TokenVendError;
}

const idle = (h: Harness) => {
  const s = h.vendor.stats();
  return {
    watchers: s.watchers,
    timers: s.timers,
    streams: s.streams,
    clockTimers: h.clock.pendingTimers(),
  };
};
const nothingLeft = { watchers: 0, timers: 0, streams: 0, clockTimers: 0 };

// ---------------------------------------------------------------- caching

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

// ---------------------------------------------------------------- stale-while-revalidate

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

// ---------------------------------------------------------------- expired: single flight

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

// ---------------------------------------------------------------- renewal contents

test("rotation: the new refresh token is stored and the next refresh redeems it", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", renewed(2));
  const r2 = await h.vendor.getValidTokens(q);
  t.is(r2.generation, 2);
  t.is(r2.tokens.refreshToken, "rt-2");
  const stored = await h.store.getActive(sessionKey("s1", "idp"));
  t.is(stored?.generation, 2);
  t.is(stored?.tokens?.refreshToken, "rt-2");

  await h.clock.advanceTo(r2.tokens.expiresAt - 30_000);
  h.upstream.script("refresh", renewed(3));
  const r3 = await h.vendor.getValidTokens(q);
  t.is(r3.generation, 3);
  t.deepEqual(
    h.upstream.calls("refresh").map((c) => c.request.refreshToken),
    ["rt-1", "rt-2"],
  );
  noSurprises(t, h);
});

test("omitted refresh token, id token and scopes are carried forward; the binding is kept", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", ok({ accessToken: "at-2", expiresInSec: 600 }));
  const r = await h.vendor.getValidTokens(q);
  t.deepEqual(r.tokens, {
    accessToken: "at-2",
    refreshToken: "rt-1",
    idToken: "id-1",
    tokenType: "Bearer",
    scopes: ["openid", "offline_access"],
    issuedAt: EXPIRED_AT,
    expiresAt: EXPIRED_AT + 600_000,
    subject: "alice",
    clientId: "web",
  });
  noSurprises(t, h);
});

test("renewedTokens: what the provider sends replaces; no expires_in means the default lifetime", (t) => {
  const prev = tokens();
  t.deepEqual(
    renewedTokens(
      prev,
      {
        accessToken: "a",
        tokenType: "",
        idToken: "id-2",
        refreshToken: "rt-2",
        scopes: ["openid"],
      },
      T0 + 5,
    ),
    {
      accessToken: "a",
      refreshToken: "rt-2",
      idToken: "id-2",
      tokenType: "Bearer",
      scopes: ["openid"],
      issuedAt: T0 + 5,
      expiresAt: T0 + 5 + hour,
      subject: "alice",
      clientId: "web",
    },
  );
  const first = renewedTokens(
    undefined,
    { accessToken: "a", tokenType: "DPoP", expiresInSec: 0 },
    T0,
  );
  t.is(first.tokenType, "DPoP");
  t.deepEqual(first.scopes, []);
  t.is(first.refreshToken, undefined);
  t.is(first.expiresAt, T0);
});

test("the lifetime is measured from when the refresh started, not when it answered", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  const p = h.vendor.getValidTokens(q);
  await d.called;
  await h.clock.advance(5_000);
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600 });
  const r = await p;
  t.is(r.tokens.issuedAt, EXPIRED_AT);
  t.is(r.tokens.expiresAt, EXPIRED_AT + hour);
});

test("minValidity: a caller needing 59 min gets a renewed token once the current one would not last", async (t) => {
  const h = setup();
  await seed(h);
  const min = 59 * 60_000;
  // Unusable for this caller from T0 + 1 h − 30 s − 59 min = T0 + 30 s.
  await h.clock.advanceTo(T0 + 29_999);
  t.is((await h.vendor.getValidTokens({ ...q, minValidityMs: min })).generation, 1);
  await h.clock.advance(1);
  // Other callers are still served the current token without a refresh.
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count(), 0);
  h.upstream.script("refresh", renewed(2));
  const r = await h.vendor.getValidTokens({ ...q, minValidityMs: min });
  t.is(r.generation, 2);
  t.is(r.tokens.expiresAt, T0 + 30_000 + hour);
  noSurprises(t, h);
});

// ---------------------------------------------------------------- transient errors and backoff

test("transient error while the token is valid: still served, next attempt gated 1 s, then 2 s, then recovers", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(STALE_AT);
  h.upstream.script("refresh", transient());
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 1);

  // Gated for 1 s: served without another attempt.
  await h.clock.advance(999);
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 1);

  // At +1 s the second attempt fails too: gated for 2 s more.
  h.upstream.script("refresh", transient({ status: 502 }));
  await h.clock.advance(1);
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 2);
  await h.clock.advance(1_999);
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 2);

  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(1);
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 3);
  t.is((await h.vendor.getValidTokens(q)).generation, 2);

  // Success resets the backoff: the next failure waits 1 s again.
  await h.clock.advanceTo(STALE_AT + 3_000 + 2_700_000);
  h.upstream.script("refresh", transient());
  t.is((await h.vendor.getValidTokens(q)).generation, 2);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 4);
  h.upstream.script("refresh", renewed(3));
  await h.clock.advance(1_000);
  await h.vendor.getValidTokens(q);
  await h.clock.settle();
  t.is(h.upstream.count("refresh"), 5);
  t.is((await h.vendor.getValidTokens(q)).generation, 3);
  noSurprises(t, h);
});

test("transient error while expired: UPSTREAM_UNAVAILABLE, refused without a call until the backoff passes", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", transient());
  const err = await vendErr(t, h.vendor.getValidTokens(q), "UPSTREAM_UNAVAILABLE");
  t.true(err.cause instanceof UpstreamError);
  t.is(err.message, 'provider "idp" is unavailable');
  await h.clock.advance(999);
  await vendErr(t, h.vendor.getValidTokens(q), "UPSTREAM_UNAVAILABLE");
  t.is(h.upstream.count("refresh"), 1);
  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(1);
  t.is((await h.vendor.getValidTokens(q)).generation, 2);
  t.is(h.upstream.count("refresh"), 2);
  noSurprises(t, h);
});

test("a network failure (not an UpstreamError) is transient too", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", { kind: "error", error: new TypeError("fetch failed") });
  const err = await vendErr(t, h.vendor.getValidTokens(q), "UPSTREAM_UNAVAILABLE");
  t.true(err.cause instanceof TypeError);
  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(1_000);
  t.is((await h.vendor.getValidTokens(q)).generation, 2);
});

test("Retry-After longer than the backoff is honoured exactly", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", transient({ status: 429, retryAfterMs: 30_000 }));
  await vendErr(t, h.vendor.getValidTokens(q), "UPSTREAM_UNAVAILABLE");
  await h.clock.advance(29_999);
  await vendErr(t, h.vendor.getValidTokens(q), "UPSTREAM_UNAVAILABLE");
  t.is(h.upstream.count("refresh"), 1);
  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(1);
  t.is((await h.vendor.getValidTokens(q)).generation, 2);
  noSurprises(t, h);
});

test("Retry-After is capped at maxRetryAfterMs (10 min)", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", transient({ status: 503, retryAfterMs: 86_400_000 }));
  await vendErr(t, h.vendor.getValidTokens(q), "UPSTREAM_UNAVAILABLE");
  await h.clock.advance(599_999);
  await vendErr(t, h.vendor.getValidTokens(q), "UPSTREAM_UNAVAILABLE");
  t.is(h.upstream.count("refresh"), 1);
  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(1);
  t.is((await h.vendor.getValidTokens(q)).generation, 2);
  noSurprises(t, h);
});

// ---------------------------------------------------------------- permanent errors

test("invalid_grant: REFRESH_FAILED, no further upstream calls for that generation, cleared by a new stored generation", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", permanent("invalid_grant"));
  const err = await vendErr(t, h.vendor.getValidTokens(q), "REFRESH_FAILED");
  t.is(err.message, 'provider "idp" rejected the refresh (invalid_grant)');
  t.is((err.cause as UpstreamError).oauthError, "invalid_grant");

  for (const step of [1_000, 60_000, hour]) {
    await h.clock.advance(step);
    await vendErr(t, h.vendor.getValidTokens(q), "REFRESH_FAILED");
  }
  t.is(h.upstream.count(), 1);

  // The user logs in again: the login component stores generation 2.
  const now = h.clock.now();
  const gen = await h.vendor.storeUpstreamTokens({
    ...q,
    tokens: tokens({
      accessToken: "at-new",
      refreshToken: "rt-new",
      issuedAt: now,
      expiresAt: now + hour,
    }),
  });
  t.is(gen, 2);
  t.is((await h.vendor.getValidTokens(q)).tokens.accessToken, "at-new");

  await h.clock.advanceTo(now + hour - 30_000);
  h.upstream.script("refresh", renewed(3));
  const r = await h.vendor.getValidTokens(q);
  t.is(r.generation, 3);
  t.is(h.upstream.calls("refresh")[1]?.request.refreshToken, "rt-new");
  noSurprises(t, h);
});

test("a permanent failure while stale keeps serving the token until it expires, without retrying", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(STALE_AT);
  h.upstream.script("refresh", permanent("invalid_client", 401));
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  await h.clock.advanceTo(EXPIRED_AT - 1);
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.settle();
  t.is(h.upstream.count(), 1);
  await h.clock.advance(1);
  const err = await vendErr(t, h.vendor.getValidTokens(q), "REFRESH_FAILED");
  t.is(err.message, 'provider "idp" rejected the refresh (invalid_client)');
  t.is(h.upstream.count(), 1);
  noSurprises(t, h);
});

test("expired with no refresh token: NO_REFRESH_TOKEN, without calling the provider", async (t) => {
  const h = setup();
  await seed(h, { refreshToken: undefined });
  await h.clock.advanceTo(STALE_AT);
  // While valid it is served; nothing to refresh with.
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
  await h.clock.advanceTo(EXPIRED_AT);
  await vendErr(t, h.vendor.getValidTokens(q), "NO_REFRESH_TOKEN");
  await vendErr(t, h.vendor.getValidTokens(q), "NO_REFRESH_TOKEN");
  t.is(h.upstream.count(), 0);
  noSurprises(t, h);
});

// ---------------------------------------------------------------- lookups and validation

test("unknown session: SESSION_NOT_FOUND, for every provider of it", async (t) => {
  const h = setup();
  const err = await vendErr(
    t,
    h.vendor.getValidTokens({ sessionId: "nobody", provider: "idp" }),
    "SESSION_NOT_FOUND",
  );
  t.is(err.message, 'no tokens for this session at provider "idp"');
  await seed(h, {}, "s1", "idp");
  await vendErr(
    t,
    h.vendor.getValidTokens({ sessionId: "s1", provider: "other" }),
    "SESSION_NOT_FOUND",
  );
  t.is(h.upstream.count(), 0);
});

test("unknown sessions leave no cached state behind with the default options (caller-chosen ids must not grow memory)", async (t) => {
  const h = setup();
  for (let i = 0; i < 100; i++) {
    await vendErr(
      t,
      h.vendor.getValidTokens({ sessionId: `random-${i}`, provider: "idp" }),
      "SESSION_NOT_FOUND",
    );
  }
  t.is(h.vendor.stats().cachedKeys, 0);
});

test("binding: a different subject or client id is INVALID_BINDING and starts no refresh", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  await vendErr(
    t,
    h.vendor.getValidTokens({ ...q, expectedSubject: "mallory" }),
    "INVALID_BINDING",
  );
  await vendErr(t, h.vendor.getValidTokens({ ...q, expectedClientId: "cli" }), "INVALID_BINDING");
  await vendErr(
    t,
    h.vendor.getValidTokens({ ...q, expectedSubject: "alice", expectedClientId: "cli" }),
    "INVALID_BINDING",
  );
  // Case matters.
  await vendErr(t, h.vendor.getValidTokens({ ...q, expectedSubject: "Alice" }), "INVALID_BINDING");
  t.is(h.upstream.count(), 0);
  h.upstream.script("refresh", renewed(2));
  const r = await h.vendor.getValidTokens({
    ...q,
    expectedSubject: "alice",
    expectedClientId: "web",
  });
  t.is(r.generation, 2);
  // An empty expectation (proto3's unset string) checks nothing.
  t.is(
    (await h.vendor.getValidTokens({ ...q, expectedSubject: "", expectedClientId: "" })).generation,
    2,
  );
  noSurprises(t, h);
});

test("binding: a token stored without a subject does not match an expected subject", async (t) => {
  const h = setup();
  await seed(h, { subject: undefined, clientId: undefined });
  await vendErr(t, h.vendor.getValidTokens({ ...q, expectedSubject: "alice" }), "INVALID_BINDING");
  t.is((await h.vendor.getValidTokens(q)).generation, 1);
});

test("unknown provider: PROVIDER_NOT_FOUND with a field violation on provider, from every entry point", async (t) => {
  const h = setup();
  const check = async (p: () => Promise<unknown>) => {
    const err = await vendErr(t, p, "PROVIDER_NOT_FOUND");
    t.deepEqual(err.fieldViolations, [
      { field: "provider", description: 'unknown provider "nope"' },
    ]);
  };
  await check(async () => h.vendor.getValidTokens({ sessionId: "s1", provider: "nope" }));
  await check(() =>
    h.vendor.storeUpstreamTokens({ sessionId: "s1", provider: "nope", tokens: tokens() }),
  );
  await check(() =>
    h.vendor.revokeSession({ sessionId: "s1", provider: "nope", revokeUpstream: false }),
  );
  await check(() =>
    watchStream(
      h.vendor,
      { kind: "session", sessionId: "s1", provider: "nope" },
      new AbortController().signal,
    ).next(),
  );
  t.is(h.store.counts.insert, 0);
});

test("unknown grant: GRANT_NOT_FOUND with a field violation on grant", async (t) => {
  const h = setup();
  const check = async (p: () => Promise<unknown>) => {
    const err = await vendErr(t, p, "GRANT_NOT_FOUND");
    t.deepEqual(err.fieldViolations, [{ field: "grant", description: 'unknown grant "nope"' }]);
  };
  await check(async () => h.vendor.getToken("nope"));
  await check(() =>
    watchStream(h.vendor, { kind: "grant", grant: "nope" }, new AbortController().signal).next(),
  );
  t.is(h.upstream.count(), 0);
});

test("lookups that fail validation reject their promise rather than throwing synchronously", (t) => {
  const h = setup();
  // A caller chaining .catch() on the returned promise must see the error there.
  t.notThrows(() => {
    h.vendor.getValidTokens({ sessionId: "s1", provider: "nope" }).catch(() => {});
    h.vendor.getToken("nope").catch(() => {});
  });
});

// ---------------------------------------------------------------- grants

test("grant: client_credentials with the grant's scopes and audience, cached, renewed when stale", async (t) => {
  const h = setup();
  h.upstream.script("clientCredentials", ok({ accessToken: "g-1", expiresInSec: 3600 }));
  const r = await h.vendor.getToken("reports");
  t.is(r.generation, 1);
  t.is(r.reason, "granted");
  t.deepEqual(r.key, { kind: "grant", grant: "reports" });
  t.is(r.tokens.accessToken, "g-1");
  const [call] = h.upstream.calls("clientCredentials");
  t.is(call?.provider, "idp");
  t.deepEqual(call?.request.scopes, ["reports.read"]);
  t.is(call?.request.audience, "https://api.example");
  t.is((await h.vendor.getToken("reports")).generation, 1);
  t.is(h.upstream.count(), 1);

  await h.clock.advanceTo(STALE_AT);
  h.upstream.script("clientCredentials", ok({ accessToken: "g-2", expiresInSec: 3600 }));
  t.is((await h.vendor.getToken("reports")).generation, 1);
  await h.clock.settle();
  t.is((await h.vendor.getToken("reports")).tokens.accessToken, "g-2");
  t.is(h.upstream.count(), 2);
  noSurprises(t, h);
});

test("grant: kept fresh in the background while used recently, left alone once nobody uses it", async (t) => {
  const h = setup({ extra: { grantKeepFreshMs: 50 * 60_000 } });
  h.upstream.script("clientCredentials", ok({ accessToken: "g-1", expiresInSec: 3600 }));
  t.is((await h.vendor.getToken("reports")).tokens.accessToken, "g-1");
  t.is(h.clock.pendingTimers(), 1);
  // Used 45 min ago, inside the 50 min window: renewed at its refresh time with no caller waiting.
  h.upstream.script("clientCredentials", ok({ accessToken: "g-2", expiresInSec: 3600 }));
  await h.clock.advanceTo(STALE_AT);
  await h.clock.settle();
  t.is(h.upstream.count("clientCredentials"), 2);
  // The next renewal falls 90 min after the last use: nothing is asked, nothing stays armed.
  await h.clock.advance(50 * 60_000);
  await h.clock.settle();
  t.is(h.upstream.count("clientCredentials"), 2);
  t.is(h.clock.pendingTimers(), 0);
  t.is(h.vendor.stats().timers, 0);
  // In use again: served (stale, revalidated once) and kept fresh again.
  h.upstream.script("clientCredentials", ok({ accessToken: "g-3", expiresInSec: 3600 }));
  t.is((await h.vendor.getToken("reports")).tokens.accessToken, "g-2");
  await h.clock.settle();
  t.is((await h.vendor.getToken("reports")).tokens.accessToken, "g-3");
  t.is(h.clock.pendingTimers(), 1);
  noSurprises(t, h);
});

test("grant: a first token that cannot be obtained is UPSTREAM_UNAVAILABLE, then backs off", async (t) => {
  const h = setup();
  h.upstream.script("clientCredentials", transient());
  await vendErr(t, h.vendor.getToken("reports"), "UPSTREAM_UNAVAILABLE");
  await h.clock.advance(999);
  await vendErr(t, h.vendor.getToken("reports"), "UPSTREAM_UNAVAILABLE");
  t.is(h.upstream.count(), 1);
  h.upstream.script("clientCredentials", ok({ accessToken: "g-1", expiresInSec: 3600 }));
  await h.clock.advance(1);
  t.is((await h.vendor.getToken("reports")).generation, 1);
  noSurprises(t, h);
});

// ---------------------------------------------------------------- revocation

test("revokeSession: later lookups are SESSION_NOT_FOUND; the refresh token is revoked upstream", async (t) => {
  const h = setup();
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  await h.vendor.storeUpstreamTokens({ sessionId: "s1", provider: "other", tokens: tokens() });
  h.upstream.script("revoke", ok(), ok());
  const res = await h.vendor.revokeSession({ sessionId: "s1", revokeUpstream: true });
  t.deepEqual(res, { revokedProviders: ["idp", "other"], upstreamFailures: [] });
  t.deepEqual(
    h.upstream
      .calls("revoke")
      .map((c) => [c.provider, c.request.token, c.request.tokenTypeHint])
      .sort(),
    [
      ["idp", "rt-1", "refresh_token"],
      ["other", "rt-1", "refresh_token"],
    ],
  );
  await vendErr(t, h.vendor.getValidTokens(q), "SESSION_NOT_FOUND");
  await vendErr(
    t,
    h.vendor.getValidTokens({ sessionId: "s1", provider: "other" }),
    "SESSION_NOT_FOUND",
  );
  const active = await h.store.getActive(sessionKey("s1", "idp"));
  t.is(active?.reason, "revoked");
  t.is(active?.generation, 2);
  // A second revocation finds nothing live.
  t.deepEqual(await h.vendor.revokeSession({ sessionId: "s1", revokeUpstream: true }), {
    revokedProviders: [],
    upstreamFailures: [],
  });
  t.is(h.upstream.count("revoke"), 2);
  noSurprises(t, h);
});

test("revokeSession of one provider leaves the session's other providers; without a refresh token the access token is revoked", async (t) => {
  const h = setup();
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens({ refreshToken: undefined }) });
  await h.vendor.storeUpstreamTokens({ sessionId: "s1", provider: "other", tokens: tokens() });
  h.upstream.script("revoke", ok());
  const res = await h.vendor.revokeSession({
    sessionId: "s1",
    provider: "idp",
    revokeUpstream: true,
  });
  t.deepEqual(res, { revokedProviders: ["idp"], upstreamFailures: [] });
  const [call] = h.upstream.calls("revoke");
  t.is(call?.request.token, "at-1");
  t.is(call?.request.tokenTypeHint, "access_token");
  await vendErr(t, h.vendor.getValidTokens(q), "SESSION_NOT_FOUND");
  t.is((await h.vendor.getValidTokens({ sessionId: "s1", provider: "other" })).generation, 1);
  noSurprises(t, h);
});

test("revokeSession: an upstream revocation failure is reported, the local revocation stands", async (t) => {
  const h = setup();
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  h.upstream.script("revoke", transient());
  const res = await h.vendor.revokeSession({ sessionId: "s1", revokeUpstream: true });
  t.deepEqual(res, {
    revokedProviders: ["idp"],
    upstreamFailures: [
      {
        provider: "idp",
        code: "UPSTREAM_UNAVAILABLE",
        message: 'revocation at provider "idp" failed',
      },
    ],
  });
  await vendErr(t, h.vendor.getValidTokens(q), "SESSION_NOT_FOUND");
});

test("revokeSession without revokeUpstream calls no provider; an unknown session revokes nothing", async (t) => {
  const h = setup();
  await h.vendor.storeUpstreamTokens({ ...q, tokens: tokens() });
  t.deepEqual(await h.vendor.revokeSession({ sessionId: "s1", revokeUpstream: false }), {
    revokedProviders: ["idp"],
    upstreamFailures: [],
  });
  t.deepEqual(await h.vendor.revokeSession({ sessionId: "nobody", revokeUpstream: true }), {
    revokedProviders: [],
    upstreamFailures: [],
  });
  t.is(h.upstream.count(), 0);
});

test("a refresh in flight during revocation does not resurrect the session", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  const p = h.vendor.getValidTokens(q);
  await d.called;
  await h.vendor.revokeSession({ sessionId: "s1", revokeUpstream: false });
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600, refreshToken: "rt-2" });
  await vendErr(t, p, "SESSION_NOT_FOUND");
  const active = await h.store.getActive(sessionKey("s1", "idp"));
  t.is(active?.reason, "revoked");
  await vendErr(t, h.vendor.getValidTokens(q), "SESSION_NOT_FOUND");
  t.is(h.upstream.count(), 1);
  noSurprises(t, h);
});

/**
 * A refresh that is waiting on the provider while the session is revoked and the
 * user at once logs in again (generation 3, whose insert prunes everything below
 * it, the revocation tombstone included). Returns the old refresh's outcome.
 */
async function refreshAcrossRevocationAndLogin(t: ExecutionContext, h: Harness) {
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  const p = h.vendor.getValidTokens(q);
  await d.called;
  await h.vendor.revokeSession({ sessionId: "s1", revokeUpstream: false });
  const now = h.clock.now();
  t.is(
    await h.vendor.storeUpstreamTokens({
      ...q,
      tokens: tokens({ accessToken: "at-new", issuedAt: now, expiresAt: now + hour }),
    }),
    3,
  );
  const ac = new AbortController();
  const stream = watchStream(h.vendor, { kind: "session", ...q }, ac.signal);
  t.is((await stream.next()).value?.record.generation, 3);
  const pending = stream.next();
  // The old refresh answers now, redeemed with the revoked generation's refresh token.
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600 });
  const outcome = await p.then(
    (r) => `served generation ${r.generation} (${r.tokens.accessToken})`,
    (e: unknown) => (e instanceof TokenVendError ? e.code : String(e)),
  );
  await h.clock.settle();
  // The new login is untouched: served, its stream open until cancelled.
  t.is((await h.vendor.getValidTokens(q)).tokens.accessToken, "at-new");
  t.is((await h.store.getActive(sessionKey("s1", "idp")))?.generation, 3);
  ac.abort();
  t.true((await pending).done);
  return outcome;
}

test("a refresh in flight across a revocation and a new login does not hand out the revoked generation's renewal", async (t) => {
  const h = setup();
  // The caller gets the session as it now is: the new login, never the revoked renewal.
  t.is(await refreshAcrossRevocationAndLogin(t, h), "served generation 3 (at-new)");
});

test("a refresh in flight across a revocation and a new login leaves no timer once the new stream ends", async (t) => {
  const h = setup();
  await refreshAcrossRevocationAndLogin(t, h);
  t.deepEqual(idle(h), nothingLeft);
});

// ---------------------------------------------------------------- all credentials of a session

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

// ---------------------------------------------------------------- persist before return

test("store write failure after a rotated refresh: the new token is kept and persisted on the next attempt without another upstream call", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", renewed(2));
  h.store.failInserts(1);
  // Not returned before it is stored.
  await vendErr(t, h.vendor.getValidTokens(q), "STORE_UNAVAILABLE");
  t.is((await h.store.getActive(sessionKey("s1", "idp")))?.generation, 1);
  // Backing off like any transient failure.
  await h.clock.advance(999);
  await vendErr(t, h.vendor.getValidTokens(q), "STORE_UNAVAILABLE");
  t.is(h.store.counts.insert, 2);
  await h.clock.advance(1);
  const r = await h.vendor.getValidTokens(q);
  t.is(r.generation, 2);
  t.is(r.tokens.accessToken, "at-2");
  t.is(r.tokens.refreshToken, "rt-2");
  const stored = await h.store.getActive(sessionKey("s1", "idp"));
  t.is(stored?.tokens?.refreshToken, "rt-2");
  t.is(h.upstream.count("refresh"), 1);
  noSurprises(t, h);
});

test("a rotated token that could not be stored is retried in the background on the backoff schedule, with no caller or watcher", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", renewed(2));
  h.store.failInserts(3);
  await vendErr(t, h.vendor.getValidTokens(q), "STORE_UNAVAILABLE");
  t.is(h.store.counts.insert, 2); // the seed, then the failed write
  t.is(h.clock.pendingTimers(), 1);
  // Retries at +1 s (fails), +3 s (fails), +7 s (succeeds): 1 s, 2 s, 4 s apart.
  for (const [step, inserts] of [
    [999, 2],
    [1, 3],
    [1_999, 3],
    [1, 4],
    [3_999, 4],
    [1, 5],
  ] as const) {
    await h.clock.advance(step);
    t.is(h.store.counts.insert, inserts, `after ${h.clock.now() - EXPIRED_AT} ms`);
  }
  const stored = await h.store.getActive(sessionKey("s1", "idp"));
  t.is(stored?.generation, 2);
  t.is(stored?.tokens?.refreshToken, "rt-2");
  // Nothing left armed once it is stored, and no second redemption.
  t.is(h.clock.pendingTimers(), 0);
  t.is(h.upstream.count("refresh"), 1);
  t.is((await h.vendor.getValidTokens(q)).tokens.accessToken, "at-2");
  noSurprises(t, h);
});

// ---------------------------------------------------------------- watch streams

const watchQ = { kind: "session", sessionId: "s1", provider: "idp" } as const;

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

test("watch: one background renewal per key, fanned out to all its streams", async (t) => {
  const h = setup();
  await seed(h);
  const ac = new AbortController();
  const streams = Array.from({ length: 10 }, () => watchStream(h.vendor, watchQ, ac.signal));
  for (const s of streams) t.is((await s.next()).value?.reason, "initial");
  t.is(h.vendor.stats().watchers, 1);
  t.is(h.vendor.stats().streams, 10);
  t.is(h.clock.pendingTimers(), 1);
  const nexts = streams.map((s) => s.next());
  h.upstream.script("refresh", renewed(2));
  await h.clock.advanceTo(STALE_AT);
  const evs = await Promise.all(nexts);
  t.true(evs.every((e) => e.value?.record.generation === 2 && e.value.reason === "refreshed"));
  t.is(h.upstream.count(), 1);
  ac.abort();
  for (const s of streams) t.true((await s.next()).done);
  t.deepEqual(idle(h), nothingLeft);
  noSurprises(t, h);
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

test("watch: a permanent failure in the background ends the streams with REFRESH_FAILED", async (t) => {
  const h = setup();
  await seed(h);
  const ac = new AbortController();
  const a = watchStream(h.vendor, watchQ, ac.signal);
  const b = watchStream(h.vendor, watchQ, ac.signal);
  await a.next();
  await b.next();
  const pa = a.next();
  const pb = b.next();
  h.upstream.script("refresh", permanent("invalid_grant"));
  await h.clock.advanceTo(STALE_AT);
  await vendErr(t, pa, "REFRESH_FAILED");
  await vendErr(t, pb, "REFRESH_FAILED");
  t.deepEqual(idle(h), nothingLeft);
  // No retries afterwards.
  await h.clock.advance(hour);
  t.is(h.upstream.count(), 1);
  noSurprises(t, h);
});

test("watch: a background transient failure is retried after the backoff, then renews", async (t) => {
  const h = setup();
  await seed(h);
  const ac = new AbortController();
  const stream = watchStream(h.vendor, watchQ, ac.signal);
  await stream.next();
  const next = stream.next();
  h.upstream.script("refresh", transient(), transient());
  await h.clock.advanceTo(STALE_AT);
  t.is(h.upstream.count(), 1);
  t.is(h.clock.nextDueInMs(), 1_000);
  await h.clock.advance(1_000);
  t.is(h.upstream.count(), 2);
  t.is(h.clock.nextDueInMs(), 2_000);
  h.upstream.script("refresh", renewed(2));
  await h.clock.advance(1_999);
  t.is(h.upstream.count(), 2);
  await h.clock.advance(1);
  t.is(h.upstream.count(), 3);
  const ev = await next;
  t.is(ev.value?.record.generation, 2);
  t.is(ev.value?.record.tokens.issuedAt, STALE_AT + 3_000);
  ac.abort();
  await stream.next();
  t.deepEqual(idle(h), nothingLeft);
  noSurprises(t, h);
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

test("watch: a renewal made by another replica is picked up from the store without a provider call", async (t) => {
  const h = setup();
  await seed(h);
  const stream = watchStream(h.vendor, watchQ, new AbortController().signal);
  await stream.next();
  const next = stream.next();
  // Another replica renewed and stored generation 2 just before our timer.
  await h.clock.advanceTo(STALE_AT - 1);
  await h.store.insert({
    key: sessionKey("s1", "idp"),
    generation: 2,
    reason: "refreshed",
    tokens: tokens({
      accessToken: "at-elsewhere",
      issuedAt: STALE_AT - 1,
      expiresAt: STALE_AT - 1 + hour,
    }),
  });
  await h.clock.advance(1);
  const ev = await next;
  t.is(ev.value?.record.tokens.accessToken, "at-elsewhere");
  t.is(h.upstream.count(), 0);
  await stream.return(undefined);
  t.deepEqual(idle(h), nothingLeft);
});

test("watch: a grant is renewed in the background by client_credentials", async (t) => {
  const h = setup();
  h.upstream.script("clientCredentials", ok({ accessToken: "g-1", expiresInSec: 3600 }));
  const ac = new AbortController();
  const stream = watchStream(h.vendor, { kind: "grant", grant: "reports" }, ac.signal);
  t.is((await stream.next()).value?.record.tokens.accessToken, "g-1");
  const next = stream.next();
  h.upstream.script("clientCredentials", ok({ accessToken: "g-2", expiresInSec: 3600 }));
  await h.clock.advanceTo(STALE_AT);
  const ev = await next;
  t.is(ev.value?.record.generation, 2);
  t.is(ev.value?.reason, "refreshed");
  ac.abort();
  await stream.next();
  t.deepEqual(idle(h), nothingLeft);
  noSurprises(t, h);
});

test("watch: a token shorter than the refresh margin is not renewed in a hot loop", async (t) => {
  const h = setup();
  // 60 s tokens: the fresh window, min(0.75 × 60 s, 60 s − 60 s margin), ends at
  // issuance, so every renewal is due the moment it is stored.
  await seed(h, { expiresAt: T0 + 60_000 });
  h.upstream.otherwise(
    "refresh",
    ok({ accessToken: "at-short", refreshToken: "rt", expiresInSec: 60 }),
  );
  const ac = new AbortController();
  const stream = watchStream(h.vendor, watchQ, ac.signal);
  await stream.next();
  // The fake clock throws once one advance has fired 10 000 timers.
  const runaway = await h.clock.advance(1_000).then(
    () => undefined,
    (e: unknown) => (e instanceof Error ? e.message : String(e)),
  );
  const calls = h.upstream.count("refresh");
  ac.abort();
  t.is(runaway, undefined);
  t.true(calls <= 2, `${calls} token endpoint calls within 1 s of fake time`);
});

// ---------------------------------------------------------------- cluster: claims and sync

test("a refresh claimed by another replica is waited for and its generation taken, without a provider call", async (t) => {
  const h = setup({ extra: { claimPollMs: 50 } });
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const key = sessionKey("s1", "idp");
  const theirs = { key, generation: 1, owner: "replica-b", leaseUntil: EXPIRED_AT + 30_000 };
  t.deepEqual(await h.store.claim(theirs), { acquired: true });
  const p = h.vendor.getValidTokens(q);
  await h.clock.advance(100);
  t.is(h.clock.pendingSleeps(), 1);
  // replica-b stores its renewal and releases the claim.
  await h.store.insert({
    key,
    generation: 2,
    reason: "refreshed",
    tokens: tokens({ accessToken: "at-b", issuedAt: EXPIRED_AT, expiresAt: EXPIRED_AT + hour }),
  });
  t.true(await h.store.releaseClaim(theirs));
  await h.clock.advance(50);
  const r = await p;
  t.is(r.generation, 2);
  t.is(r.tokens.accessToken, "at-b");
  t.is(h.upstream.count(), 0);
  t.like(h.vendor.stats(), { claimWaits: 1, claimTakeovers: 0, inflightRefreshes: 0 });
  t.is(h.clock.pendingSleeps(), 0);
});

test("a dead claim is taken over once its lease has passed, not before", async (t) => {
  const h = setup({ extra: { claimPollMs: 50, replicaId: "replica-a" } });
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const key = sessionKey("s1", "idp");
  await h.store.claim({ key, generation: 1, owner: "replica-dead", leaseUntil: EXPIRED_AT + 100 });
  h.upstream.script("refresh", renewed(2));
  const p = h.vendor.getValidTokens(q);
  await h.clock.advance(99);
  t.is(h.upstream.count(), 0);
  await h.clock.advance(1);
  const r = await p;
  t.is(r.generation, 2);
  t.is(h.upstream.count("refresh"), 1);
  t.like(h.vendor.stats(), { claimWaits: 1, claimTakeovers: 1 });
  // Our own claim was released after the renewal was stored.
  t.deepEqual(
    await h.store.claim({ key, generation: 1, owner: "x", leaseUntil: EXPIRED_AT + hour }),
    { acquired: true },
  );
  noSurprises(t, h);
});

test("a generation another replica stored, adopted through the sync while this one waited on its claim, is taken without redeeming it again", async (t) => {
  const h = setup({ extra: { claimPollMs: 50, syncIntervalMs: 20, replicaId: "replica-a" } });
  // Expired from the start: a 20 ms sync over an hour of fake time would be 180,000 timers.
  await seed(h, { issuedAt: T0 - hour, expiresAt: T0 });
  const key = sessionKey("s1", "idp");
  const theirs = { key, generation: 1, owner: "replica-b", leaseUntil: T0 + 30_000 };
  await h.store.claim(theirs);
  const p = h.vendor.getValidTokens(q);
  await h.clock.advance(1);
  // Replica B renews, stores generation 2 and lets go of its claim.
  await h.store.insert({
    key,
    generation: 2,
    reason: "refreshed",
    tokens: tokens({ accessToken: "at-b", issuedAt: T0, expiresAt: T0 + hour }),
  });
  await h.store.releaseClaim(theirs);
  // The sync brings generation 2 into the cache before the refresh looks again.
  await h.clock.advance(20);
  await h.clock.advance(50);
  const r = await p;
  t.is(r.generation, 2);
  t.is(r.tokens.accessToken, "at-b");
  t.is(h.upstream.count(), 0);
  noSurprises(t, h);
});

test("a caller waiting on another replica's claim may give up; the wait goes on for the others", async (t) => {
  const h = setup({ extra: { claimPollMs: 50 } });
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const key = sessionKey("s1", "idp");
  await h.store.claim({ key, generation: 1, owner: "replica-b", leaseUntil: EXPIRED_AT + 30_000 });
  const impatient = new AbortController();
  const a = h.vendor.getValidTokens(q, impatient.signal);
  const b = h.vendor.getValidTokens(q);
  await h.clock.advance(50);
  impatient.abort(new Error("deadline"));
  t.is((await t.throwsAsync(a))?.message, "deadline");
  await h.store.insert({
    key,
    generation: 2,
    reason: "refreshed",
    tokens: tokens({ accessToken: "at-b", issuedAt: EXPIRED_AT, expiresAt: EXPIRED_AT + hour }),
  });
  await h.clock.advance(50);
  t.is((await b).generation, 2);
  t.is(h.upstream.count(), 0);
});

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
