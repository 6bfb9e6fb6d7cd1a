// Refreshes a caller forces with a minimum validity on a token that is still valid: refused
// without calling the provider when its tokens cannot live that long, and at most one per
// minIntervalMs and `budget` per window per key (defaults: 5 s, 20 an hour).

import test from "ava";
import {
  hour,
  noSurprises,
  q,
  renewed,
  seed,
  setup,
  vendErr,
} from "../../test/support/vendor-harness.ts";

// A one-hour token from the provider, less the 30 s skew: the longest validity it can have.
const reachableMs = hour - 30_000;

test("a stored token earns one refresh to learn the provider's lifetime; then a longer minimum validity is FAILED_PRECONDITION without a call", async (t) => {
  const h = setup();
  await seed(h);
  h.upstream.script("refresh", renewed(2));
  const first = await h.vendor.getValidTokens({ ...q, minValidityMs: 2 * hour });
  t.is(first.generation, 2, "how long the stored token was meant to live is unknown: refreshed");
  for (let i = 0; i < 3; i++) {
    const err = await vendErr(
      t,
      h.vendor.getValidTokens({ ...q, minValidityMs: 2 * hour }),
      "MIN_VALIDITY_UNREACHABLE",
    );
    t.is(
      err.message,
      'provider "idp" issues tokens that live 3600 s: at most 3570 s of validity can be asked for',
    );
    t.deepEqual(err.metadata, {
      provider: "idp",
      token_lifetime_seconds: "3600",
      max_min_validity_seconds: "3570",
    });
  }
  t.is(h.upstream.count("refresh"), 1);
  noSurprises(t, h);
});

test("forced refreshes of one key are minIntervalMs apart: RESOURCE_EXHAUSTED (REFRESH_THROTTLED) with the wait", async (t) => {
  const h = setup();
  await seed(h);
  h.upstream.script("refresh", renewed(2), renewed(3));
  t.is((await h.vendor.getValidTokens({ ...q, minValidityMs: reachableMs })).generation, 2);
  await h.clock.advance(1_000);
  const err = await vendErr(
    t,
    h.vendor.getValidTokens({ ...q, minValidityMs: reachableMs }),
    "RESOURCE_EXHAUSTED",
  );
  t.is(err.reason, "REFRESH_THROTTLED");
  t.is(err.retryAfterMs, 4_000);
  t.is(h.upstream.count("refresh"), 1);
  // Without a minimum validity the valid token is served as ever.
  t.is((await h.vendor.getValidTokens(q)).generation, 2);
  await h.clock.advance(4_000);
  t.is((await h.vendor.getValidTokens({ ...q, minValidityMs: reachableMs })).generation, 3);
  t.is(h.upstream.count("refresh"), 2);
  noSurprises(t, h);
});

test("at most `budget` forced refreshes per window: the next waits for the budget to refill", async (t) => {
  const h = setup();
  await seed(h);
  for (let n = 2; n <= 21; n++) {
    h.upstream.script("refresh", renewed(n));
    t.is((await h.vendor.getValidTokens({ ...q, minValidityMs: reachableMs })).generation, n);
    await h.clock.advance(5_000);
  }
  t.is(h.upstream.count("refresh"), 20);
  const err = await vendErr(
    t,
    h.vendor.getValidTokens({ ...q, minValidityMs: reachableMs }),
    "RESOURCE_EXHAUSTED",
  );
  // 20 spent over 100 s refilled 100 s × 20 / hour = 0.56 of one: 0.44 × 180 s to go.
  t.is(err.retryAfterMs, 80_000);
  await h.clock.advance(79_999);
  await vendErr(
    t,
    h.vendor.getValidTokens({ ...q, minValidityMs: reachableMs }),
    "RESOURCE_EXHAUSTED",
  );
  await h.clock.advance(1);
  h.upstream.script("refresh", renewed(22));
  t.is((await h.vendor.getValidTokens({ ...q, minValidityMs: reachableMs })).generation, 22);
  t.is(h.upstream.count("refresh"), 21);
  noSurprises(t, h);
});

test("an expired token is refreshed whatever the budget: the limits are on tokens still valid", async (t) => {
  const h = setup();
  await seed(h);
  h.upstream.script("refresh", renewed(2), renewed(3));
  await h.vendor.getValidTokens({ ...q, minValidityMs: reachableMs });
  await h.clock.advance(hour);
  t.is((await h.vendor.getValidTokens(q)).generation, 3);
  noSurprises(t, h);
});

test("grants (GetToken) too: a minimum validity beyond the grant's token life asks the provider nothing", async (t) => {
  const h = setup();
  h.upstream.script("clientCredentials", renewed(1));
  await h.vendor.getToken("reports", undefined);
  const err = await vendErr(t, h.vendor.getToken("reports", 2 * hour), "MIN_VALIDITY_UNREACHABLE");
  t.is(err.metadata.max_min_validity_seconds, "3570");
  t.is(h.upstream.count("clientCredentials"), 1);
  h.upstream.script("clientCredentials", renewed(2));
  await h.vendor.getToken("reports", reachableMs);
  await h.clock.advance(1_000);
  const throttled = await vendErr(
    t,
    h.vendor.getToken("reports", reachableMs),
    "RESOURCE_EXHAUSTED",
  );
  t.is(throttled.reason, "REFRESH_THROTTLED");
  t.is(h.upstream.count("clientCredentials"), 2);
  noSurprises(t, h);
});
