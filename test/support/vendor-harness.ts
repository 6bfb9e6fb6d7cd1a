// A token vendor under a fake clock, a scripted random, a scripted upstream and
// a counting memory store, for the core's unit tests: exact times, generations
// and call counts, and no real timer deciding anything.

import type { ExecutionContext } from "ava";
import { configDefaults } from "../../src/config.ts";
import type { GrantSettings, ProviderSettings } from "../../src/core/catalog.ts";
import type { Random } from "../../src/core/clock.ts";
import { TokenVendError } from "../../src/core/errors.ts";
import { sessionKey, type TokenSet } from "../../src/core/token.ts";
import type { TokenStore } from "../../src/core/token-store.ts";
import { createTokenVendor, type TokenVendor } from "../../src/core/token-vendor.ts";
import type { TokenVendorOptions, VendorTuning } from "../../src/core/vendor-options.ts";
import { createMemoryStore } from "../../src/store/memory-store.ts";
import { createFakeClock, type FakeClock, scriptedRandom, T0 } from "./fake-clock.ts";
import { createScriptedUpstream, ok, type ScriptedUpstream } from "./scripted-upstream.ts";

export const hour = 3_600_000;
/** With random 0: the end of the fresh window of a one-hour token issued at T0. */
export const STALE_AT = T0 + 2_700_000;
/** Expiry minus the 30 s clock skew. */
export const EXPIRED_AT = T0 + hour - 30_000;

export const q = { sessionId: "s1", provider: "idp" } as const;
export const watchQ = { kind: "session", sessionId: "s1", provider: "idp" } as const;

export const settings: ProviderSettings = {
  lifetime: configDefaults.lifetime,
  backoff: configDefaults.backoff,
};
export const providers = new Map<string, ProviderSettings>([
  ["idp", settings],
  ["other", settings],
]);
export const grants = new Map<string, GrantSettings>([
  ["reports", { provider: "idp", scopes: ["reports.read"], audience: "https://api.example" }],
]);

/** The documented defaults, with the sync off: one process owns the store. */
export const tuning: VendorTuning = {
  refreshTimeoutMs: configDefaults.refreshTimeoutMs,
  maxStreams: configDefaults.maxStreams,
  claimLeaseMs: configDefaults.claimLeaseMs,
  claimPollMs: configDefaults.claimPollMs,
  syncIntervalMs: 0,
  idleEvictMs: configDefaults.idleEvictMs,
  minRefreshIntervalMs: configDefaults.minRefreshIntervalMs,
  grantKeepFreshMs: configDefaults.grantKeepFreshMs,
  cacheMaxKeys: configDefaults.limits.cache.maxKeys,
  cacheMaxBytes: configDefaults.limits.cache.maxBytes,
  forcedRefresh: configDefaults.limits.forcedRefresh,
};

export function tokens(over: Partial<TokenSet> = {}): TokenSet {
  return {
    accessToken: "at-1",
    refreshToken: "rt-1",
    idToken: "id-1",
    tokenType: "Bearer",
    scopes: ["openid", "offline_access"],
    issuedAt: T0,
    expiresAt: T0 + hour,
    subject: "alice",
    clientId: "web",
    ...over,
  };
}

/** A one-hour token response from the provider. */
export const renewed = (n: number, rotate = true) =>
  ok({
    accessToken: `at-${n}`,
    expiresInSec: 3600,
    ...(rotate ? { refreshToken: `rt-${n}` } : {}),
  });

export interface CountingStore extends TokenStore {
  /** How many calls of each method reached the store. */
  readonly counts: Record<"getActive" | "getSession" | "insert", number>;
  /** The next `n` inserts throw, as a store that is down does. */
  failInserts(n: number): void;
}

/** The memory store, counting reads and failing inserts on demand. */
export function createCountingStore(): CountingStore {
  const inner = createMemoryStore();
  const counts = { getActive: 0, getSession: 0, insert: 0 };
  let failing = 0;
  return {
    ...inner,
    counts,
    failInserts(n) {
      failing = n;
    },
    getActive(key, o) {
      counts.getActive++;
      return inner.getActive(key, o);
    },
    getSession(id, o) {
      counts.getSession++;
      return inner.getSession(id, o);
    },
    async insert(record, o) {
      counts.insert++;
      if (failing > 0) {
        failing--;
        throw new Error("connection reset");
      }
      return inner.insert(record, o);
    },
  };
}

export interface Harness {
  readonly clock: FakeClock;
  readonly upstream: ScriptedUpstream;
  readonly store: CountingStore;
  readonly vendor: TokenVendor;
  readonly service: AbortController;
}

export function setup(
  o: { random?: Random; maxStreams?: number; extra?: Partial<TokenVendorOptions> } = {},
): Harness {
  const clock = createFakeClock({ nowMs: T0 });
  const upstream = createScriptedUpstream();
  const store = createCountingStore();
  const service = new AbortController();
  const vendor = createTokenVendor({
    ...tuning,
    store,
    upstream,
    providers,
    grants,
    clock,
    random: o.random ?? scriptedRandom(0),
    signal: service.signal,
    ...(o.maxStreams !== undefined ? { maxStreams: o.maxStreams } : {}),
    ...o.extra,
  });
  return { clock, upstream, store, vendor, service };
}

/** Stores generation 1 of a session directly in the store, as another replica would: the vendor's cache is cold. */
export async function seed(
  h: Harness,
  over: Partial<TokenSet> = {},
  sessionId = "s1",
  provider = "idp",
) {
  await h.store.insert({
    key: sessionKey(sessionId, provider),
    generation: 1,
    reason: "stored",
    tokens: tokens(over),
  });
}

/** No upstream call happened that the test did not script. */
export function noSurprises(t: ExecutionContext, h: Harness) {
  t.deepEqual(
    h.upstream.unscripted.map((c) => `${c.method} ${c.provider}`),
    [],
    "unscripted upstream calls",
  );
}

export async function vendErr(
  t: ExecutionContext,
  p: Promise<unknown> | (() => Promise<unknown>),
  code: TokenVendError["code"],
): Promise<TokenVendError> {
  const expectation = { instanceOf: TokenVendError };
  const err = await (typeof p === "function"
    ? t.throwsAsync(p, expectation)
    : t.throwsAsync(p, expectation));
  t.is(err?.code, code);
  return err as TokenVendError;
}

/** What a vendor holds that must go when its streams do. */
export const idle = (h: Harness) => {
  const s = h.vendor.stats();
  return {
    watchers: s.watchers,
    timers: s.timers,
    streams: s.streams,
    clockTimers: h.clock.pendingTimers(),
  };
};
export const nothingLeft = { watchers: 0, timers: 0, streams: 0, clockTimers: 0 };
