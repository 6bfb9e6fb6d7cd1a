// Lookups: unknown providers, grants and sessions, bindings, and validation
// that rejects promises rather than throwing.

import test from "ava";
import {
  EXPIRED_AT,
  noSurprises,
  q,
  renewed,
  seed,
  setup,
  tokens,
  vendErr,
} from "../../test/support/vendor-harness.ts";
import { watchStream } from "../../test/support/watch-stream.ts";

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
