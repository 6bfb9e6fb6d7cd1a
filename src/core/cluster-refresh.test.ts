// One refresh per cluster: what a renewal holds, persist before return, and
// the claim protocol between replicas.

import test from "ava";
import { T0 } from "../../test/support/fake-clock.ts";
import { deferred, ok } from "../../test/support/scripted-upstream.ts";
import {
  EXPIRED_AT,
  hour,
  noSurprises,
  q,
  renewed,
  seed,
  setup,
  tokens,
  vendErr,
} from "../../test/support/vendor-harness.ts";
import { configDefaults } from "../config.ts";
import { renewedTokens } from "./cluster-refresh.ts";
import { sessionKey } from "./token.ts";

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
      configDefaults.lifetime,
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
    configDefaults.lifetime,
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
  t.is(h.clock.pendingTimers(), 2); // the retry, and the heartbeat of the claim kept for it
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

test("a renewal not yet stored keeps its claim alive past the lease, carrying the renewal; another replica never redeems the spent token", async (t) => {
  const h = setup({ extra: { replicaId: "replica-a", claimLeaseMs: 3_000 } });
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  h.upstream.script("refresh", renewed(2));
  h.store.failInserts(100);
  await vendErr(t, h.vendor.getValidTokens(q), "STORE_UNAVAILABLE");
  const key = sessionKey("s1", "idp");
  // Three leases later the claim is still ours: the heartbeat moved it every second.
  await h.clock.advance(9_000);
  const other = await h.store.claim({
    key,
    generation: 1,
    owner: "replica-b",
    leaseUntil: h.clock.now() + 3_000,
  });
  t.false(other.acquired);
  if (other.acquired) return;
  t.is(other.holder.owner, "replica-a");
  t.true(other.holder.leaseUntil > h.clock.now());
  t.is(other.holder.renewal?.tokens.accessToken, "at-2");
  t.is(other.holder.renewal?.generation, 2);
  // The store comes back: the renewal is stored, the claim released, nothing more is armed.
  h.store.failInserts(0);
  await h.clock.advance(60_000);
  t.is((await h.store.getActive(key))?.tokens?.refreshToken, "rt-2");
  t.true(
    (await h.store.claim({ key, generation: 1, owner: "replica-b", leaseUntil: h.clock.now() + 1 }))
      .acquired,
  );
  t.is(h.upstream.count("refresh"), 1);
  t.is(h.clock.pendingTimers(), 0);
  noSurprises(t, h);
});

test("a dead claim whose holder had redeemed is finished with the renewal it carries, never redeemed again", async (t) => {
  const h = setup({ extra: { claimPollMs: 50, replicaId: "replica-a" } });
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const key = sessionKey("s1", "idp");
  const dead = { key, generation: 1, owner: "replica-dead", leaseUntil: EXPIRED_AT + 100 };
  t.true((await h.store.claim(dead)).acquired);
  const renewal = {
    key,
    generation: 2,
    reason: "refreshed" as const,
    tokens: tokens({
      accessToken: "at-dead",
      refreshToken: "rt-dead",
      issuedAt: EXPIRED_AT,
      expiresAt: EXPIRED_AT + hour,
    }),
  };
  t.truthy(await h.store.renewClaim(dead, EXPIRED_AT + 100, renewal));
  const p = h.vendor.getValidTokens(q);
  await h.clock.advance(100);
  const r = await p;
  t.is(r.generation, 2);
  t.is(r.tokens.accessToken, "at-dead");
  t.is((await h.store.getActive(key))?.tokens?.refreshToken, "rt-dead");
  t.is(h.upstream.count(), 0);
  t.like(h.vendor.stats(), { claimTakeovers: 1 });
  noSurprises(t, h);
});

test("a renewal that lost to a revocation made meanwhile is revoked at the provider", async (t) => {
  const h = setup();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const reply = deferred();
  h.upstream.script("refresh", reply);
  h.upstream.script("revoke", ok());
  const p = h.vendor.getValidTokens(q);
  await reply.called;
  // Another replica revokes the session while the provider answers this one.
  await h.store.insert({ key: sessionKey("s1", "idp"), generation: 2, reason: "revoked" });
  reply.resolve({
    accessToken: "at-orphan",
    tokenType: "Bearer",
    expiresInSec: 3600,
    refreshToken: "rt-orphan",
  });
  await vendErr(t, p, "SESSION_NOT_FOUND");
  await h.clock.advance(0);
  const revokes = h.upstream.calls("revoke");
  t.is(revokes.length, 1);
  t.is(revokes[0]?.request.token, "rt-orphan");
  t.is(revokes[0]?.request.tokenTypeHint, "refresh_token");
  noSurprises(t, h);
});
