// Single-flight refresh with backoff: transient errors are retried on the
// backoff schedule while the token is served, permanent ones stop attempts.

import test from "ava";
import { permanent, transient } from "../../test/support/scripted-upstream.ts";
import {
  EXPIRED_AT,
  hour,
  noSurprises,
  q,
  renewed,
  STALE_AT,
  seed,
  setup,
  tokens,
  vendErr,
} from "../../test/support/vendor-harness.ts";
import { UpstreamError } from "./upstream.ts";

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
