// Revocation: tombstones, revocation at the provider, and refreshes in flight
// that must not resurrect a revoked session.

import test, { type ExecutionContext } from "ava";
import { deferred, ok, transient } from "../../test/support/scripted-upstream.ts";
import {
  EXPIRED_AT,
  grants,
  type Harness,
  hour,
  idle,
  noSurprises,
  nothingLeft,
  providers,
  q,
  seed,
  setup,
  tokens,
  tuning,
  vendErr,
} from "../../test/support/vendor-harness.ts";
import { watchStream } from "../../test/support/watch-stream.ts";
import { TokenVendError } from "./errors.ts";
import { noopLogger } from "./logger.ts";
import { keyId, sessionKey, type TokenKey } from "./token.ts";
import { type StoreCallOptions, UnreadableRecordError } from "./token-store.ts";
import { createTokenVendor } from "./token-vendor.ts";

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

test("a refresh in flight during revocation does not resurrect the session, and its tokens are revoked at the provider", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const d = deferred();
  h.upstream.script("refresh", d);
  h.upstream.script("revoke", ok());
  const p = h.vendor.getValidTokens(q);
  await d.called;
  await h.vendor.revokeSession({ sessionId: "s1", revokeUpstream: false });
  d.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600, refreshToken: "rt-2" });
  await vendErr(t, p, "SESSION_NOT_FOUND");
  const active = await h.store.getActive(sessionKey("s1", "idp"));
  t.is(active?.reason, "revoked");
  await vendErr(t, h.vendor.getValidTokens(q), "SESSION_NOT_FOUND");
  t.is(h.upstream.count("refresh"), 1);
  // The renewal lost to the revocation: its refresh token would otherwise stay live, unused.
  t.deepEqual(
    h.upstream.calls("revoke").map((c) => c.request.token),
    ["rt-2"],
  );
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

test("a session whose stored token does not open: reads are TOKEN_UNREADABLE, logged as an error; it can still be revoked, and stored over", async (t) => {
  const unreadable: string[] = [];
  const h = setup();
  const lost = sessionKey("s1", "idp");
  const store = {
    ...h.store,
    async getActive(key: TokenKey, o?: StoreCallOptions) {
      if (keyId(key) === keyId(lost) && (await h.store.getActive(key, o))?.generation === 1) {
        unreadable.push(keyId(key));
        throw new UnreadableRecordError("DECRYPT_FAILED", "a value does not open");
      }
      return h.store.getActive(key, o);
    },
  };
  const logged: object[] = [];
  const logger = { ...noopLogger, error: (o: object) => logged.push(o) };
  const vendor = createTokenVendor({
    ...tuning,
    store,
    upstream: h.upstream,
    providers,
    grants,
    clock: h.clock,
    logger,
    signal: h.service.signal,
  });
  await seed(h);
  await vendErr(t, vendor.getValidTokens(q), "TOKEN_UNREADABLE");
  t.like(logged[0], { reason: "DECRYPT_FAILED" });
  // Revoked without opening it; its token cannot be revoked at the provider, and that is said.
  const res = await vendor.revokeSession({ sessionId: "s1", revokeUpstream: true });
  t.deepEqual(res.revokedProviders, ["idp"]);
  t.deepEqual(
    res.upstreamFailures.map((f) => f.code),
    ["TOKEN_UNREADABLE"],
  );
  t.is((await h.store.getActive(lost))?.reason, "revoked");
  // A new login goes above it.
  t.is(await vendor.storeUpstreamTokens({ ...q, tokens: tokens({ accessToken: "again" }) }), 3);
  t.is((await vendor.getValidTokens(q)).tokens.accessToken, "again");
  t.is(h.upstream.count(), 0);
  await vendor.close();
});
