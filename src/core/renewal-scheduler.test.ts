// Background renewal: one timer per key at its jittered refresh time or its
// backoff, for watched keys and grants in use.

import test from "ava";
import { createFakeClock, T0 } from "../../test/support/fake-clock.ts";
import { ok, permanent, transient } from "../../test/support/scripted-upstream.ts";
import {
  hour,
  idle,
  noSurprises,
  nothingLeft,
  renewed,
  STALE_AT,
  seed,
  setup,
  tokens,
  vendErr,
  watchQ,
} from "../../test/support/vendor-harness.ts";
import { watchStream } from "../../test/support/watch-stream.ts";
import { TokenVendError } from "./errors.ts";
import { createKeyCache } from "./key-cache.ts";
import { createRenewalScheduler } from "./renewal-scheduler.ts";
import { sessionKey } from "./token.ts";

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

// ---------------------------------------------------------------- the scheduler alone

function scheduler(needed = true) {
  const clock = createFakeClock({ nowMs: T0 });
  const due: number[] = [];
  const state = { needed, holds: true };
  const s = createRenewalScheduler({
    clock,
    minRefreshIntervalMs: 5_000,
    needed: () => state.needed,
    holds: () => state.holds,
    onDue: () => due.push(clock.now()),
  });
  const cache = createKeyCache({
    clock,
    idleEvictMs: hour,
    maxEntries: 1_000,
    maxBytes: 1 << 30,
    pinned: () => true,
    onDrop: () => {},
  });
  const entry = cache.entry(sessionKey("s1", "idp"), "idp");
  entry.record = { key: entry.key, generation: 1, reason: "stored", tokens: tokens() };
  return { clock, s, due, state, entry };
}

test("scheduler: one timer per key, at the refresh time, or the backoff's next attempt after failures", async (t) => {
  const { clock, s, due, entry } = scheduler();
  entry.refreshAt = T0 + 60_000;
  s.update(entry);
  s.update(entry);
  t.is(s.count, 1);
  t.is(clock.pendingTimers(), 1);
  t.is(clock.nextDueInMs(), 60_000);
  entry.refresh.failures = 1;
  entry.refresh.nextAttemptAt = T0 + 2_000;
  s.update(entry);
  t.is(clock.nextDueInMs(), 2_000);
  await clock.advance(2_000);
  t.deepEqual(due, [T0 + 2_000]);
  t.is(s.count, 0, "a fired timer is no longer counted");
});

test("scheduler: renewals at least minRefreshIntervalMs apart; none for a permanent failure, a dropped key or a key nobody needs", async (t) => {
  const { clock, s, state, entry } = scheduler();
  entry.refreshAt = T0;
  entry.renewedAt = T0;
  s.update(entry);
  t.is(clock.nextDueInMs(), 5_000);
  entry.refresh.permanent = new TokenVendError("REFRESH_FAILED", "rejected");
  s.update(entry);
  t.is(s.count, 0);
  entry.refresh.permanent = undefined;
  state.holds = false;
  s.update(entry);
  t.is(s.count, 0);
  state.holds = true;
  state.needed = false;
  s.update(entry);
  t.is(s.count, 0);
  t.is(clock.pendingTimers(), 0);
});

test("scheduler: a key no longer needed when its timer fires is not renewed", async (t) => {
  const { clock, s, due, state, entry } = scheduler();
  entry.refreshAt = T0 + 1_000;
  s.update(entry);
  state.needed = false;
  await clock.advance(1_000);
  t.deepEqual(due, []);
});

test("scheduler: a wait beyond setTimeout's ~24.8 days is re-armed in steps, then fires on time", async (t) => {
  const { clock, s, due, entry } = scheduler();
  const maxTimerMs = 2 ** 31 - 1;
  entry.refreshAt = T0 + maxTimerMs + 10;
  s.update(entry);
  t.is(clock.nextDueInMs(), maxTimerMs);
  await clock.advance(maxTimerMs);
  t.deepEqual(due, []);
  t.is(clock.nextDueInMs(), 10);
  await clock.advance(10);
  t.deepEqual(due, [T0 + maxTimerMs + 10]);
});

test("scheduler: stop disarms everything and arms nothing more", async (t) => {
  const { clock, s, entry } = scheduler();
  entry.refreshAt = T0 + 1_000;
  s.update(entry);
  s.stop();
  s.update(entry);
  t.is(s.count, 0);
  t.is(clock.pendingTimers(), 0);
});

test("scheduler: a key already due is armed a second ahead, never at once, whatever its state", async (t) => {
  const { clock, s, due, entry } = scheduler();
  entry.refreshAt = T0 - 60_000;
  s.update(entry);
  t.is(clock.nextDueInMs(), 1_000);
  // A failure nothing backed off (no next attempt in the future): a second too, not a spin.
  entry.refresh.failures = 1;
  entry.refresh.nextAttemptAt = 0;
  for (let i = 0; i < 10; i++) {
    s.update(entry);
    await clock.advance(1_000);
  }
  t.is(due.length, 10, "one renewal a second over ten seconds");
});
