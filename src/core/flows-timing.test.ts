// The timing rules of the flows' background work, exact to the millisecond on a fake clock:
// device polling (interval, +5 s per slow_down, the provider's final answer), failure webhook
// retries (the backoff policy, maxAttempts, one event per failure), and the unused-refresh scan
// (one replica per interval, the rate, a watermark past sessions that failed for good). The
// provider side here is scripted: exact instants are what a real provider cannot be made to show;
// the same flows run against the real oidc-provider in test/*-flow.test.ts.

import test from "ava";
import { createFakeClock } from "../../test/support/fake-clock.ts";
import {
  flowTestLifetime as lifetime,
  flowSettings as settings,
} from "../../test/support/flow-settings.ts";
import { createMemoryFlowStates } from "../store/flow-state-memory.ts";
import { createMemoryStore } from "../store/memory-store.ts";
import { noopMeter } from "../telemetry/metrics.ts";
import { createDeviceFlow, type DeviceFlow } from "./device-flow.ts";
import { isTokenVendError, notOwnerError, TokenVendError } from "./errors.ts";
import type { FlowTokens, FlowUpstream } from "./flow-upstream.ts";
import { noopLogger } from "./logger.ts";
import { createRenewalFailures, type WebhookDeliver } from "./renewal-failures.ts";
import type { StoreTokensInput } from "./session-writes.ts";
import { sessionKey } from "./token.ts";
import { startUnusedRefresh } from "./unused-refresh.ts";
import { UpstreamError } from "./upstream.ts";

const oauthError = (code: string) =>
  new UpstreamError(`provider said ${code}`, { permanent: false, oauthError: code, status: 400 });

/** A device flow whose polls answer `answers` in turn, recording when each came. */
function deviceHarness(
  answers: Array<string | "tokens">,
  intervalSec: number | undefined,
  storeErrors: TokenVendError[] = [],
) {
  let storeAttempts = 0;
  const clock = createFakeClock();
  const t0 = clock.now();
  const polls: number[] = [];
  const stored: StoreTokensInput[] = [];
  const upstream: Pick<FlowUpstream, "startDevice" | "pollDevice"> = {
    async startDevice() {
      return {
        deviceCode: "dc",
        userCode: "ABCD-EFGH",
        verificationUri: "https://idp.example/device",
        verificationUriComplete: undefined,
        expiresInSec: 600,
        intervalSec,
      };
    },
    async pollDevice(): Promise<FlowTokens> {
      polls.push(clock.now() - t0);
      const a = answers.shift() ?? "authorization_pending";
      if (a === "tokens")
        return { accessToken: "at", tokenType: "Bearer", expiresInSec: 300, subject: "ann" };
      throw oauthError(a);
    },
  };
  const device: DeviceFlow = createDeviceFlow({
    states: createMemoryFlowStates(),
    upstream: upstream as FlowUpstream,
    providers: new Map([["idp", settings()]]),
    lifetimeOf: () => lifetime,
    storeTokens: async (input) => {
      storeAttempts++;
      const err = storeErrors.shift();
      if (err !== undefined) throw err;
      stored.push(input);
      return 1;
    },
    clock,
    random: () => 0.5,
    logger: noopLogger,
    signal: new AbortController().signal,
    upstreamTimeoutMs: 1_000,
  });
  return { clock, polls, stored, device, storeAttempts: () => storeAttempts };
}

test("device polling: every interval, 5 s more after each slow_down, until the tokens come", async (t) => {
  const h = deviceHarness(
    ["authorization_pending", "slow_down", "slow_down", "authorization_pending", "tokens"],
    2,
  );
  const started = await h.device.start({ sessionId: "s", provider: "idp", scopes: [] });
  t.is(started.intervalSec, 2);
  await h.clock.advance(60_000);
  t.deepEqual(h.polls, [2_000, 4_000, 11_000, 23_000, 35_000]);
  t.is(h.stored.length, 1);
  t.like(h.stored[0]?.tokens, { accessToken: "at", subject: "ann", clientId: "web" });
  t.is(h.device.polling, 0);
  // Approved: nothing pending any more, so a stream serves the stored token.
  await h.device.awaitLogin("s", "idp", new AbortController().signal);
});

test("device polling: 5 s when the provider names no interval; access_denied ends it for the streams", async (t) => {
  const h = deviceHarness(["authorization_pending", "access_denied"], undefined);
  await h.device.start({ sessionId: "s", provider: "idp", scopes: [] });
  await h.clock.advance(30_000);
  t.deepEqual(h.polls, [5_000, 10_000]);
  const err = await h.device.awaitLogin("s", "idp", new AbortController().signal).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.true(isTokenVendError(err, "AUTHORIZATION_FAILED"));
  t.deepEqual((err as TokenVendError).metadata, { oauth_error: "access_denied" });
  t.is(h.stored.length, 0);
});

test("device polling stops at the code's expiry (expired_token); a new start replaces the old poll", async (t) => {
  const h = deviceHarness([], 100);
  await h.device.start({ sessionId: "s", provider: "idp", scopes: [] });
  await h.device.start({ sessionId: "s", provider: "idp", scopes: [] });
  await h.clock.advance(700_000);
  // Two polls at 100 s would mean the first start still polled; 6 = one poll per 100 s until 600 s.
  t.deepEqual(h.polls, [100_000, 200_000, 300_000, 400_000, 500_000]);
  t.is(h.device.polling, 0);
  const err = await h.device
    .awaitLogin("s", "idp", new AbortController().signal)
    .catch((e: unknown) => e);
  t.deepEqual((err as TokenVendError).metadata, { oauth_error: "expired_token" });
});

test("device polling: tokens the store could not take are stored again, not polled for again", async (t) => {
  const down = () => new TokenVendError("STORE_UNAVAILABLE", "store down");
  const h = deviceHarness(["tokens"], 1, [down(), down()]);
  await h.device.start({ sessionId: "s", provider: "idp", scopes: [] });
  await h.clock.advance(10_000);
  t.deepEqual(h.polls, [1_000], "the device code is spent: one poll");
  t.is(h.stored.length, 1);
  await h.device.awaitLogin("s", "idp", new AbortController().signal);
});

test("device polling: a store refusal that is not an outage (NOT_OWNER) fails the login once, never retried nor polled again", async (t) => {
  const h = deviceHarness(["tokens"], 1, [notOwnerError()]);
  await h.device.start({ sessionId: "s", provider: "idp", scopes: [] });
  await h.clock.advance(120_000);
  t.deepEqual(h.polls, [1_000]);
  t.is(h.storeAttempts(), 1);
  t.is(h.device.polling, 0);
  const err = await h.device
    .awaitLogin("s", "idp", new AbortController().signal)
    .catch((e: unknown) => e);
  t.deepEqual((err as TokenVendError).metadata, { oauth_error: "session_not_stored" });
});

test("a pending device login is replaced only by its owner, or a caller reaching every owner's sessions", async (t) => {
  const h = deviceHarness([], 100);
  const start = (owner: string | undefined) =>
    h.device.start({
      sessionId: "s",
      provider: "idp",
      scopes: [],
      ownership: { recordOwner: owner ?? "gateway", owner },
    });
  await start("alice");
  const err = await start("mallory").catch((e: unknown) => e);
  t.true(isTokenVendError(err, "PERMISSION_DENIED"));
  await start("alice");
  await t.notThrowsAsync(start(undefined));
});

/** Renewal failures posting through `deliver`, on `clock`, jitter drawn as 0. */
function failuresWith(
  clock: ReturnType<typeof createFakeClock>,
  deliver: WebhookDeliver,
  backoff: { initialMs: number; maxMs: number; jitter: number },
  maxAttempts: number,
) {
  return createRenewalFailures({
    providers: new Map([
      ["idp", settings({ webhook: { url: "https://app.example/hook", secret: "whsec_x" } })],
    ]),
    deliver,
    clock,
    random: () => 0,
    logger: noopLogger,
    signal: new AbortController().signal,
    backoff: { ...backoff, multiplier: 2, maxRetryAfterMs: 0 },
    maxAttempts,
    timeoutMs: 1_000,
    failures: noopMeter.createCounter("f"),
    deliveries: noopMeter.createCounter("d"),
  });
}

test("webhook delivery: retried on the backoff policy until a 2xx; one event per failure", async (t) => {
  const clock = createFakeClock();
  const t0 = clock.now();
  const attempts: Array<{ at: number; id: string }> = [];
  const statuses = [500, 503, 204];
  const failures = failuresWith(
    clock,
    async (_hook, msg) => {
      attempts.push({ at: clock.now() - t0, id: msg.id });
      return statuses.shift() ?? 204;
    },
    { initialMs: 1_000, maxMs: 60_000, jitter: 0.2 },
    5,
  );
  const err = new TokenVendError("REFRESH_FAILED", "rejected", {
    cause: oauthError("invalid_grant"),
  });
  failures.report({ sessionId: "s", provider: "idp", generation: 3 }, err);
  failures.report({ sessionId: "s", provider: "idp", generation: 3 }, err);
  await clock.advance(10_000);
  t.deepEqual(
    attempts.map((a) => a.at),
    [0, 1_000, 3_000],
  );
  t.is(new Set(attempts.map((a) => a.id)).size, 1);
  t.is(failures.pending, 0);
});

test("webhook delivery gives up after maxAttempts", async (t) => {
  const clock = createFakeClock();
  let n = 0;
  const failures = failuresWith(
    clock,
    async () => {
      n++;
      throw new Error("connection refused");
    },
    { initialMs: 100, maxMs: 1_000, jitter: 0 },
    3,
  );
  failures.report(
    { sessionId: "s", provider: "idp", generation: 1 },
    new TokenVendError("NO_REFRESH_TOKEN", "none"),
  );
  await clock.advance(60_000);
  t.is(n, 3);
  t.is(failures.pending, 0);
});

test("unused refresh: one replica per interval, at the rate, and a session that failed for good is not retried", async (t) => {
  const clock = createFakeClock();
  const store = createMemoryStore();
  const states = createMemoryFlowStates();
  const now = clock.now();
  const day = 86_400_000;
  for (const [id, age] of [
    ["a", 40],
    ["b", 35],
    ["dead", 38],
    ["fresh", 1],
  ] as const) {
    await store.insert({
      key: sessionKey(id, "idp"),
      generation: 1,
      reason: "stored",
      tokens: {
        accessToken: "at",
        refreshToken: "rt",
        tokenType: "Bearer",
        scopes: [],
        issuedAt: now - age * day,
        expiresAt: now - age * day + 3_600_000,
      },
    });
  }
  const renewals: Array<{ id: string; at: number }> = [];
  const replica = (replicaId: string) =>
    startUnusedRefresh({
      store,
      states,
      providers: new Map([["idp", settings({ maxUnusedRefreshMs: 30 * day })]]),
      renewSession: async (sessionId) => {
        renewals.push({ id: sessionId, at: clock.now() - now });
        if (sessionId === "dead") throw new TokenVendError("REFRESH_FAILED", "invalid_grant");
        return {} as never;
      },
      clock,
      logger: noopLogger,
      signal: new AbortController().signal,
      scanIntervalMs: 60_000,
      ratePerSecond: 2,
      replicaId,
    });
  const r1 = replica("r1");
  const r2 = replica("r2");
  t.teardown(() => {
    r1.stop();
    r2.stop();
  });
  await clock.advance(60_000 + 2_000);
  // Oldest first, 500 ms apart; "fresh" is not due; the second replica found the lease taken.
  t.deepEqual(renewals, [
    { id: "a", at: 60_000 },
    { id: "dead", at: 60_500 },
    { id: "b", at: 61_000 },
  ]);
  renewals.length = 0;
  await clock.advance(60_000);
  // "a" and "b" still look unused here (renewSession is scripted), "dead" is behind the watermark.
  t.false(renewals.some((r) => r.id === "dead"));
});
