// The per-provider request limiter on the fake clock: concurrency, rate, the FIFO queue and its
// bound, callers leaving the queue, and the pause a 429 or 503 with Retry-After opens.

import test from "ava";
import { createFakeClock, T0 } from "../../test/support/fake-clock.ts";
import { isTokenVendError } from "./errors.ts";
import {
  createProviderLimiter,
  type LimiterEvent,
  type ProviderLimits,
  type Release,
} from "./provider-limiter.ts";
import { UpstreamError } from "./upstream.ts";

const base: ProviderLimits = {
  maxConcurrent: 2,
  ratePerSecond: 1_000,
  maxQueued: 100,
  maxPauseMs: 60_000,
};

function limiter(over: Partial<ProviderLimits> = {}) {
  const clock = createFakeClock({ nowMs: T0 });
  const events: LimiterEvent[] = [];
  const l = createProviderLimiter({
    clock,
    limitsOf: () => ({ ...base, ...over }),
    onEvent: (e) => events.push(e),
  });
  const service = new AbortController().signal;
  /** Acquires a slot and records when it was granted. */
  const take = (signal = service, provider = "idp") => {
    const got: { release?: Release; at?: number; err?: unknown } = {};
    const p = l.acquire(provider, signal).then(
      (r) => {
        got.release = r;
        got.at = clock.now();
      },
      (e: unknown) => {
        got.err = e;
      },
    );
    return Object.assign(got, { settled: p });
  };
  return { clock, l, events, take };
}

test("at most maxConcurrent at once; the others wait in order and start as slots come back", async (t) => {
  const { clock, l, take } = limiter();
  const a = take();
  const b = take();
  const c = take();
  const d = take();
  await clock.settle();
  t.truthy(a.release);
  t.truthy(b.release);
  t.is(c.release, undefined);
  t.is(l.usage().get("idp")?.queued, 2);
  t.is(l.usage().get("idp")?.active, 2);
  b.release?.();
  await clock.settle();
  t.truthy(c.release, "the first waiter took the freed slot");
  t.is(d.release, undefined);
  a.release?.();
  a.release?.(); // twice is once
  await clock.settle();
  t.truthy(d.release);
  t.deepEqual(l.usage().get("idp"), { active: 2, queued: 0, pausedUntil: 0 });
});

test("providers are limited apart: one provider's queue does not hold another's requests", async (t) => {
  const { clock, take } = limiter({ maxConcurrent: 1 });
  const svc = new AbortController().signal;
  take(svc, "a");
  const a2 = take(svc, "a");
  const b = take(svc, "b");
  await clock.settle();
  t.is(a2.release, undefined);
  t.truthy(b.release);
});

test("at most ratePerSecond start within any second; the next starts when the oldest leaves the window", async (t) => {
  const { clock, take } = limiter({ maxConcurrent: 100, ratePerSecond: 3 });
  const first = [take(), take(), take()];
  await clock.settle();
  for (const f of first) f.release?.();
  await clock.advance(400);
  const late = take();
  await clock.settle();
  t.is(late.release, undefined, "3 started at T0: the 4th waits for T0 + 1 s");
  t.is(clock.nextDueInMs(), 600);
  await clock.advance(599);
  t.is(late.release, undefined);
  await clock.advance(1);
  t.is(late.at, T0 + 1_000);
});

test("a slot given back unused leaves the rate's window: waiting for a claim spends nothing", async (t) => {
  const { clock, take } = limiter({ maxConcurrent: 100, ratePerSecond: 1 });
  const a = take();
  await clock.settle();
  a.release?.(true);
  const b = take();
  await clock.settle();
  t.is(b.at, T0, "started at once: the unused start was not counted");
});

test("beyond maxQueued a request is shed at once: UPSTREAM_UNAVAILABLE, PROVIDER_OVERLOADED, with a wait", async (t) => {
  const { clock, events, take } = limiter({ maxConcurrent: 1, ratePerSecond: 2, maxQueued: 2 });
  take();
  take();
  take();
  const shed = take();
  await shed.settled;
  t.true(isTokenVendError(shed.err));
  if (!isTokenVendError(shed.err)) return;
  t.is(shed.err.code, "UPSTREAM_UNAVAILABLE");
  t.is(shed.err.reason, "PROVIDER_OVERLOADED");
  t.is(shed.err.retryAfterMs, 1_000, "2 waiting at 2 a second");
  t.deepEqual(shed.err.metadata, { provider: "idp" });
  await clock.settle();
  t.deepEqual(
    events.filter((e) => e.kind === "shed"),
    [{ kind: "shed", provider: "idp", reason: "queue_full" }],
  );
});

test("a waiter whose signal aborts leaves the queue with its reason and keeps no slot", async (t) => {
  const { clock, l, events, take } = limiter({ maxConcurrent: 1 });
  const a = take();
  const ac = new AbortController();
  const b = take(ac.signal);
  const c = take();
  await clock.settle();
  ac.abort(new Error("caller left"));
  await b.settled;
  t.is((b.err as Error).message, "caller left");
  t.is(l.usage().get("idp")?.queued, 1);
  a.release?.();
  await clock.settle();
  t.truthy(c.release, "the next waiter, not the one that left");
  t.true(events.some((e) => e.kind === "shed" && e.reason === "abandoned"));
  const gone = new AbortController();
  gone.abort(new Error("already gone"));
  const d = take(gone.signal);
  await d.settled;
  t.is((d.err as Error).message, "already gone");
});

test("a 429 or 503 with Retry-After pauses every request to the provider, capped at maxPauseMs", async (t) => {
  const { clock, l, events, take } = limiter({ maxPauseMs: 30_000 });
  l.observe(
    "idp",
    new UpstreamError("busy", { permanent: false, status: 500, retryAfterMs: 5_000 }),
  );
  l.observe("idp", new UpstreamError("busy", { permanent: false, status: 429 }));
  t.is(l.usage().get("idp")?.pausedUntil ?? 0, 0, "a 500, or no Retry-After: no pause");
  l.observe(
    "idp",
    new UpstreamError("slow down", { permanent: false, status: 429, retryAfterMs: 120_000 }),
  );
  t.is(l.usage().get("idp")?.pausedUntil, T0 + 30_000);
  const a = take();
  const b = take();
  await clock.advance(29_999);
  t.is(a.release, undefined);
  await clock.advance(1);
  t.is(a.at, T0 + 30_000);
  t.is(b.at, T0 + 30_000);
  t.deepEqual(
    events.filter((e) => e.kind === "paused"),
    [{ kind: "paused", provider: "idp", ms: 30_000 }],
  );
  // A shorter pause does not shorten a longer one.
  l.pause("idp", 10_000);
  l.observe(
    "idp",
    new UpstreamError("unavailable", { permanent: false, status: 503, retryAfterMs: 20_000 }),
  );
  t.is(l.usage().get("idp")?.pausedUntil, T0 + 50_000);
});

test("run holds a slot for the request, gives it back after, and pauses on its 429", async (t) => {
  const { clock, l } = limiter({ maxConcurrent: 1 });
  const signal = new AbortController().signal;
  t.is(await l.run("idp", signal, async () => "answer"), "answer");
  await t.throwsAsync(
    l.run("idp", signal, async () => {
      throw new UpstreamError("slow down", { permanent: false, status: 429, retryAfterMs: 2_000 });
    }),
    { message: "slow down" },
  );
  t.deepEqual(l.usage().get("idp"), { active: 0, queued: 0, pausedUntil: T0 + 2_000 });
  let ran = false;
  const p = l.run("idp", signal, async () => {
    ran = true;
  });
  await clock.advance(1_999);
  t.false(ran);
  await clock.advance(1);
  await p;
  t.true(ran);
});
