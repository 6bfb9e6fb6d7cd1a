// Properties (fast-check) of the pure lifetime and backoff functions: a token only ever moves
// fresh → stale → expired as time passes, asking for more validity never makes it fresher, a
// longer-lived token is never due sooner, and backoff never shortens as failures add up nor
// goes past its cap (Retry-After aside, itself capped). A few hundred cases each: milliseconds.

import test from "ava";
import fc from "fast-check";
import { type BackoffPolicy, backoffDelayMs } from "./backoff.ts";
import { type LifetimePolicy, refreshAt, type TokenState, tokenState } from "./lifetime.ts";

const rank: Record<TokenState, number> = { fresh: 0, stale: 1, expired: 2 };
const T0 = 1_700_000_000_000;

const lifetimePolicy = fc.record({
  freshness: fc.double({ min: 0.01, max: 1, noNaN: true }),
  refreshMarginMs: fc.integer({ min: 0, max: 600_000 }),
  clockSkewMs: fc.integer({ min: 0, max: 120_000 }),
  refreshJitter: fc.double({ min: 0, max: 0.5, noNaN: true }),
  defaultLifetimeMs: fc.constant(3_600_000),
}) satisfies fc.Arbitrary<LifetimePolicy>;
const times = fc
  .tuple(fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: 0, max: 86_400_000 }))
  .map(([issued, life]) => ({ issuedAt: T0 + issued, expiresAt: T0 + issued + life }));
const unit = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
const runs = { numRuns: 500 };

test("a token's state never goes back as time passes, nor as the minimum validity grows", (t) => {
  fc.assert(
    fc.property(
      lifetimePolicy,
      times,
      unit,
      fc.integer({ min: 0, max: 90_000_000 }),
      fc.integer({ min: 0, max: 90_000_000 }),
      fc.integer({ min: 0, max: 10_000_000 }),
      fc.integer({ min: 0, max: 10_000_000 }),
      (p, tk, r, a, b, va, vb) => {
        const at = refreshAt(tk, p, () => r);
        const [t1, t2] = a <= b ? [T0 + a, T0 + b] : [T0 + b, T0 + a];
        const [v1, v2] = va <= vb ? [va, vb] : [vb, va];
        return (
          rank[tokenState(tk, p, at, t1, v1)] <= rank[tokenState(tk, p, at, t2, v1)] &&
          rank[tokenState(tk, p, at, t1, v1)] <= rank[tokenState(tk, p, at, t1, v2)]
        );
      },
    ),
    runs,
  );
  t.pass();
});

test("refreshAt lies within the token's life and never comes sooner for a token that lives longer", (t) => {
  fc.assert(
    fc.property(
      lifetimePolicy,
      times,
      fc.integer({ min: 0, max: 86_400_000 }),
      unit,
      (p, tk, more, r) => {
        const at = refreshAt(tk, p, () => r);
        const longer = refreshAt({ ...tk, expiresAt: tk.expiresAt + more }, p, () => r);
        return at >= tk.issuedAt && at <= Math.max(tk.issuedAt, tk.expiresAt) && longer >= at;
      },
    ),
    runs,
  );
  t.pass();
});

const backoffPolicy = fc
  .record({
    initialMs: fc.integer({ min: 1, max: 60_000 }),
    multiplier: fc.double({ min: 1, max: 10, noNaN: true }),
    extra: fc.integer({ min: 0, max: 3_600_000 }),
    jitter: fc.double({ min: 0, max: 1, noNaN: true }),
    maxRetryAfterMs: fc.integer({ min: 0, max: 3_600_000 }),
  })
  .map(({ extra, ...p }): BackoffPolicy => ({ ...p, maxMs: p.initialMs + extra }));

test("backoff never shortens as failures add up (same random draw), and stays within its cap", (t) => {
  fc.assert(
    fc.property(
      backoffPolicy,
      fc.integer({ min: 1, max: 60 }),
      fc.integer({ min: 0, max: 5 }),
      unit,
      fc.option(fc.integer({ min: 0, max: 7_200_000 }), { nil: undefined }),
      (p, n, step, r, retryAfter) => {
        const d1 = backoffDelayMs(n, p, () => r, retryAfter);
        const d2 = backoffDelayMs(n + step, p, () => r, retryAfter);
        const cap = Math.max(p.maxMs, Math.min(retryAfter ?? 0, p.maxRetryAfterMs));
        return d2 >= d1 && d1 >= 0 && d2 <= cap;
      },
    ),
    runs,
  );
  t.pass();
});

test("a Retry-After within its cap is always waited at least; one beyond it only up to the cap", (t) => {
  fc.assert(
    fc.property(
      backoffPolicy,
      fc.integer({ min: 1, max: 30 }),
      unit,
      fc.nat(7_200_000),
      (p, n, r, ra) => {
        const d = backoffDelayMs(n, p, () => r, ra);
        return d >= Math.round(Math.min(ra, p.maxRetryAfterMs));
      },
    ),
    runs,
  );
  t.pass();
});
