// Backoff after transient refresh failures: exact delays for each attempt, cap,
// jitter and Retry-After.

import test from "ava";
import { almostOne, scriptedRandom } from "../../test/support/fake-clock.ts";
import { configDefaults } from "../config.ts";
import { type BackoffPolicy, backoffDelayMs } from "./backoff.ts";

const defaultBackoffPolicy = configDefaults.backoff;
const p = defaultBackoffPolicy;
const noJitter = scriptedRandom(0);

test("the documented defaults: 1 s doubling to a 60 s cap, 20% jitter, Retry-After up to 10 min", (t) => {
  t.deepEqual(defaultBackoffPolicy, {
    initialMs: 1_000,
    multiplier: 2,
    maxMs: 60_000,
    jitter: 0.2,
    maxRetryAfterMs: 600_000,
  });
});

test("without jitter: 1 s, 2 s, 4 s, 8 s, 16 s, 32 s, then the 60 s cap", (t) => {
  const delays = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((n) => backoffDelayMs(n, p, noJitter));
  t.deepEqual(delays, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]);
});

test("the cap holds for huge attempt numbers, even past where 2^n overflows to Infinity", (t) => {
  t.is(backoffDelayMs(100, p, noJitter), 60_000);
  t.is(backoffDelayMs(1_100, p, noJitter), 60_000);
  t.is(backoffDelayMs(Number.MAX_SAFE_INTEGER, p, noJitter), 60_000);
});

test("attempt 0 and negative attempts are treated as the first retry", (t) => {
  t.is(backoffDelayMs(0, p, noJitter), 1_000);
  t.is(backoffDelayMs(-5, p, noJitter), 1_000);
});

test("a custom policy: 250 ms tripling to a 5 s cap", (t) => {
  const q: BackoffPolicy = { ...p, initialMs: 250, multiplier: 3, maxMs: 5_000, jitter: 0 };
  t.deepEqual(
    [1, 2, 3, 4, 5].map((n) => backoffDelayMs(n, q, noJitter)),
    [250, 750, 2_250, 5_000, 5_000],
  );
});

test("jitter only shortens: random 0.5 takes 10% off, random → 1 takes 20% off", (t) => {
  t.is(backoffDelayMs(1, p, scriptedRandom(0.5)), 900);
  t.is(backoffDelayMs(3, p, scriptedRandom(0.5)), 3_600);
  t.is(backoffDelayMs(1, p, scriptedRandom(0.75)), 850);
  t.is(backoffDelayMs(1, p, scriptedRandom(almostOne)), 800);
  // Capped delays are jittered too, so replicas at the cap spread out.
  t.is(backoffDelayMs(20, p, scriptedRandom(0.5)), 54_000);
  t.is(backoffDelayMs(20, p, scriptedRandom(almostOne)), 48_000);
});

test("every jittered delay lies in [(1 − jitter) × d, d] and is a whole number of ms", (t) => {
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelayMs(2, p, scriptedRandom(i / 1000));
    t.true(d >= 1_600 && d <= 2_000 && Number.isInteger(d), `random ${i / 1000} gave ${d}`);
  }
});

test("one random draw per delay, also when Retry-After is given", (t) => {
  const r = scriptedRandom([0.5, 0.5]);
  backoffDelayMs(1, p, r);
  backoffDelayMs(1, p, r, 30_000);
  t.is(r.draws, 2);
});

test("Retry-After longer than the backoff is honoured exactly", (t) => {
  t.is(backoffDelayMs(1, p, noJitter, 5_000), 5_000);
  t.is(backoffDelayMs(1, p, scriptedRandom(almostOne), 5_000), 5_000);
  t.is(backoffDelayMs(7, p, noJitter, 120_000), 120_000);
});

test("Retry-After shorter than the backoff does not shorten it", (t) => {
  t.is(backoffDelayMs(1, p, noJitter, 100), 1_000);
  t.is(backoffDelayMs(3, p, noJitter, 0), 4_000);
  t.is(backoffDelayMs(1, p, scriptedRandom(0.5), 899), 900);
});

test("Retry-After is capped at maxRetryAfterMs (10 min)", (t) => {
  t.is(backoffDelayMs(1, p, noJitter, 600_000), 600_000);
  t.is(backoffDelayMs(1, p, noJitter, 600_001), 600_000);
  t.is(backoffDelayMs(1, p, noJitter, 86_400_000), 600_000);
  t.is(backoffDelayMs(1, { ...p, maxRetryAfterMs: 30_000 }, noJitter, 86_400_000), 30_000);
});

test("a Retry-After cap below the backoff leaves the backoff", (t) => {
  t.is(backoffDelayMs(7, { ...p, maxRetryAfterMs: 10_000 }, noJitter, 86_400_000), 60_000);
});
