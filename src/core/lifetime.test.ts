// The token lifetime policy, exactly: each boundary is checked one ms before and at it.

import test from "ava";
import { almostOne, scriptedRandom, T0 } from "../../test/support/fake-clock.ts";
import { configDefaults } from "../config.ts";
import {
  freshUntil,
  type LifetimePolicy,
  refreshAt,
  type TokenTimes,
  tokenState,
  unusableAt,
} from "./lifetime.ts";

const hour = 3_600_000;
/** A one-hour token issued at T0. */
const oneHour: TokenTimes = { issuedAt: T0, expiresAt: T0 + hour };
const defaultLifetimePolicy = configDefaults.lifetime;
const p = defaultLifetimePolicy;
const noJitter = scriptedRandom(0);

test("the documented defaults: 0.75 freshness, 60 s margin, 30 s skew, 10% jitter, 1 h assumed lifetime", (t) => {
  t.deepEqual(defaultLifetimePolicy, {
    freshness: 0.75,
    refreshMarginMs: 60_000,
    clockSkewMs: 30_000,
    refreshJitter: 0.1,
    defaultLifetimeMs: 3_600_000,
  });
});

test("freshUntil: issued + freshness × lifetime when the margin does not bind", (t) => {
  t.is(freshUntil(oneHour, p), T0 + 2_700_000);
  t.is(freshUntil(oneHour, { ...p, freshness: 0.5 }), T0 + 1_800_000);
  // 24 h token: 18 h, far from the 60 s margin.
  t.is(freshUntil({ issuedAt: T0, expiresAt: T0 + 24 * hour }, p), T0 + 18 * hour);
});

test("freshUntil: refreshMargin caps the fresh window", (t) => {
  // freshness 1 would keep the token fresh to its expiry; the margin stops it 60 s before.
  t.is(freshUntil(oneHour, { ...p, freshness: 1 }), T0 + hour - 60_000);
  // 200 s token: 0.75 × 200 s = 150 s, but expires − 60 s = 140 s is earlier.
  t.is(freshUntil({ issuedAt: T0, expiresAt: T0 + 200_000 }, p), T0 + 140_000);
  // Exactly where they meet: 240 s token, 0.75 × 240 s = 180 s = 240 s − 60 s.
  t.is(freshUntil({ issuedAt: T0, expiresAt: T0 + 240_000 }, p), T0 + 180_000);
  // A margin longer than the lifetime puts the end of freshness before issuance.
  t.is(freshUntil({ issuedAt: T0, expiresAt: T0 + 30_000 }, p), T0 - 30_000);
});

test("freshUntil: a token that expires before it was issued has zero lifetime", (t) => {
  t.is(freshUntil({ issuedAt: T0, expiresAt: T0 - 1_000 }, p), T0 - 61_000);
  t.is(freshUntil({ issuedAt: T0, expiresAt: T0 }, { ...p, refreshMarginMs: 0 }), T0);
});

test("unusableAt: expiry minus the clock skew, minus the caller's minimum validity", (t) => {
  t.is(unusableAt(oneHour, p), T0 + hour - 30_000);
  t.is(unusableAt(oneHour, { ...p, clockSkewMs: 0 }), T0 + hour);
  t.is(unusableAt(oneHour, { ...p, clockSkewMs: 120_000 }), T0 + hour - 120_000);
  t.is(unusableAt(oneHour, p, 600_000), T0 + hour - 30_000 - 600_000);
  t.is(unusableAt(oneHour, p, 0), unusableAt(oneHour, p));
});

test("refreshAt: random 0 is the end of the fresh window", (t) => {
  t.is(refreshAt(oneHour, p, noJitter), T0 + 2_700_000);
});

test("refreshAt: random 0.5 moves it half the jitter (0.05 × lifetime = 180 s) earlier", (t) => {
  t.is(refreshAt(oneHour, p, scriptedRandom(0.5)), T0 + 2_700_000 - 180_000);
  t.is(refreshAt(oneHour, p, scriptedRandom(0.25)), T0 + 2_700_000 - 90_000);
});

test("refreshAt: as random → 1 it approaches freshUntil − jitter × lifetime (360 s earlier) and never passes it", (t) => {
  const limit = T0 + 2_700_000 - 360_000;
  const at = refreshAt(oneHour, p, scriptedRandom(almostOne));
  // Within a µs of the limit (at epoch-scale instants a double resolves ~0.24 µs,
  // so the largest draw below 1 rounds onto it), and never earlier.
  t.true(at >= limit);
  t.true(at - limit < 1e-3, `${at - limit} ms from the limit`);
  const at0 = refreshAt({ issuedAt: 0, expiresAt: hour }, p, scriptedRandom(almostOne));
  t.true(at0 >= 2_340_000 && at0 - 2_340_000 < 1e-6);
});

test("refreshAt: every draw lies in [freshUntil − jitter × lifetime, freshUntil]", (t) => {
  for (let i = 0; i < 1000; i++) {
    const r = i / 1000;
    const at = refreshAt(oneHour, p, scriptedRandom(r));
    t.true(at <= T0 + 2_700_000 && at >= T0 + 2_700_000 - 360_000, `random ${r} gave ${at - T0}`);
  }
});

test("refreshAt: draws exactly one random number", (t) => {
  const r = scriptedRandom([0.5]);
  refreshAt(oneHour, p, r);
  t.is(r.draws, 1);
});

test("refreshAt: zero jitter ignores the draw", (t) => {
  t.is(refreshAt(oneHour, { ...p, refreshJitter: 0 }, scriptedRandom(almostOne)), T0 + 2_700_000);
});

test("refreshAt: never before issuance", (t) => {
  // freshness 0.1 and jitter 0.5: 360 s − up to 1 800 s would land before issuance.
  const wide: LifetimePolicy = { ...p, freshness: 0.1, refreshJitter: 0.5 };
  t.is(refreshAt(oneHour, wide, scriptedRandom(almostOne)), T0);
  t.is(refreshAt(oneHour, wide, scriptedRandom(0.2)), T0);
  t.is(refreshAt(oneHour, wide, scriptedRandom(0)), T0 + 360_000);
  // A token shorter than the margin is due for refresh as soon as it is issued.
  t.is(refreshAt({ issuedAt: T0, expiresAt: T0 + 30_000 }, p, noJitter), T0);
  t.is(refreshAt({ issuedAt: T0, expiresAt: T0 - 1 }, p, noJitter), T0);
});

test("tokenState: fresh → stale exactly at the refresh time", (t) => {
  const at = refreshAt(oneHour, p, noJitter);
  t.is(tokenState(oneHour, p, at, T0, 0), "fresh");
  t.is(tokenState(oneHour, p, at, at - 1), "fresh");
  t.is(tokenState(oneHour, p, at, at), "stale");
});

test("tokenState: a jittered refresh time makes the token stale earlier", (t) => {
  const at = refreshAt(oneHour, p, scriptedRandom(0.5));
  t.is(at, T0 + 2_520_000);
  t.is(tokenState(oneHour, p, at, T0 + 2_519_999), "fresh");
  t.is(tokenState(oneHour, p, at, T0 + 2_520_000), "stale");
});

test("tokenState: stale → expired at expiry minus the 30 s skew, not at the real expiry", (t) => {
  const at = refreshAt(oneHour, p, noJitter);
  t.is(tokenState(oneHour, p, at, T0 + hour - 30_001), "stale");
  t.is(tokenState(oneHour, p, at, T0 + hour - 30_000), "expired");
  t.is(tokenState(oneHour, p, at, T0 + hour), "expired");
  t.is(tokenState(oneHour, p, at, T0 + 10 * hour), "expired");
});

test("tokenState: the clock skew is configurable, including zero", (t) => {
  const at = refreshAt(oneHour, p, noJitter);
  const noSkew = { ...p, clockSkewMs: 0 };
  t.is(tokenState(oneHour, noSkew, at, T0 + hour - 1), "stale");
  t.is(tokenState(oneHour, noSkew, at, T0 + hour), "expired");
  const bigSkew = { ...p, clockSkewMs: 300_000 };
  t.is(tokenState(oneHour, bigSkew, at, T0 + hour - 300_001), "stale");
  t.is(tokenState(oneHour, bigSkew, at, T0 + hour - 300_000), "expired");
});

test("tokenState: minValidity makes a fresh token expired for that caller alone", (t) => {
  const at = refreshAt(oneHour, p, noJitter);
  const min = 10 * 60_000;
  // Unusable for this caller from expiry − skew − 10 min = T0 + 2 970 000 on.
  t.is(tokenState(oneHour, p, at, T0 + 2_969_999, min), "stale");
  t.is(tokenState(oneHour, p, at, T0 + 2_970_000, min), "expired");
  t.is(tokenState(oneHour, p, at, T0 + 2_970_000, 0), "stale");
  // Longer than the whole remaining life: expired even while fresh.
  t.is(tokenState(oneHour, p, at, T0, 2 * hour), "expired");
  t.is(tokenState(oneHour, p, at, T0, 0), "fresh");
});

test("tokenState: expiry wins over freshness when the skew exceeds the fresh window", (t) => {
  // 40 s token: fresh window ends at T0 − 20 s (margin), unusable from T0 + 10 s.
  const short: TokenTimes = { issuedAt: T0, expiresAt: T0 + 40_000 };
  const at = refreshAt(short, p, noJitter);
  t.is(at, T0);
  t.is(tokenState(short, p, at, T0), "stale");
  t.is(tokenState(short, p, at, T0 + 9_999), "stale");
  t.is(tokenState(short, p, at, T0 + 10_000), "expired");
  // 20 s token: unusable before it was even issued.
  const shorter: TokenTimes = { issuedAt: T0, expiresAt: T0 + 20_000 };
  t.is(tokenState(shorter, p, refreshAt(shorter, p, noJitter), T0), "expired");
});

test("tokenState: a clock behind the issuer still reads the token as fresh, not expired", (t) => {
  // Wall clock 5 min behind issuance (an NTP step back).
  const at = refreshAt(oneHour, p, noJitter);
  t.is(tokenState(oneHour, p, at, T0 - 300_000), "fresh");
});
