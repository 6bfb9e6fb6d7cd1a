// The `limits` section: its defaults (config-defaults.ts only), sizes and durations parsed once,
// per-provider limits over the section's, and errors that name the option and what it must be.

import test from "ava";
import { ConfigError, configDefaults, parseConfig } from "./config.ts";

const parse = (raw: Record<string, unknown>) =>
  parseConfig(raw, { env: { S: "secret" }, readFile: () => "" });
const provider = {
  tokenEndpoint: "https://idp.example/token",
  clientId: "c",
  clientSecretEnv: "S",
};
const fails = (t: import("ava").ExecutionContext, raw: Record<string, unknown>) =>
  t.throws(() => parse(raw), { instanceOf: ConfigError })?.message;

test("without a limits section every bound is its default, and providers take limits.providers", (t) => {
  const c = parse({ providers: { idp: provider } });
  const d = configDefaults.limits;
  t.deepEqual(c.limits.cache, d.cache);
  t.deepEqual(c.limits.exchangeCache, d.exchangeCache);
  t.deepEqual(c.limits.store, d.store);
  t.deepEqual(c.limits.forcedRefresh, d.forcedRefresh);
  t.deepEqual(c.limits.providers, d.providers);
  t.deepEqual(c.providers.get("idp")?.limits, d.providers);
  t.true(c.limits.callers.enabled);
  t.is(c.limits.callers.requestsPerSecond, d.callers.requestsPerSecond);
  t.is(c.limits.callers.rpcs.size, 0);
  t.is(c.limits.callers.refusalHoldMs, d.callers.refusalHoldMs);
  t.is(c.limits.callers.failuresPerSecond, d.callers.failuresPerSecond);
  t.is(c.limits.callers.maxHeldRefusals, d.callers.maxHeldRefusals);
});

test("sizes take Ki, Mi and Gi; durations their units; a provider's own limits win over the section's", (t) => {
  const c = parse({
    limits: {
      cache: { maxKeys: 5_000, maxBytes: "8Mi" },
      store: { maxBytes: 2 * 1024 * 1024, tombstoneRetention: "2h" },
      refresh: { minInterval: "30s", budget: 3, window: "10m" },
      providers: { maxConcurrent: 4, ratePerSecond: 10 },
      callers: {
        requestsPerSecond: 50,
        rpcs: { GetValidTokens: 2_000 },
        maxStreams: 7,
        refusalHold: "250ms",
        failuresPerSecond: 0,
        maxHeldRefusals: 0,
      },
    },
    providers: { idp: { ...provider, limits: { maxConcurrent: 1 } }, other: provider },
  });
  t.deepEqual(c.limits.cache, { maxKeys: 5_000, maxBytes: 8 * 1024 * 1024 });
  t.is(c.limits.store.maxBytes, 2 * 1024 * 1024);
  t.is(c.limits.store.tombstoneRetentionMs, 7_200_000);
  t.deepEqual(c.limits.forcedRefresh, { minIntervalMs: 30_000, budget: 3, windowMs: 600_000 });
  t.deepEqual(c.providers.get("idp")?.limits, {
    maxConcurrent: 1,
    ratePerSecond: 10,
    maxQueued: configDefaults.limits.providers.maxQueued,
  });
  t.is(c.providers.get("other")?.limits.maxConcurrent, 4);
  t.is(c.limits.callers.requestsPerSecond, 50);
  t.is(c.limits.callers.rpcs.get("GetValidTokens"), 2_000);
  t.is(c.limits.callers.maxStreams, 7);
  t.is(c.limits.callers.refusalHoldMs, 250);
  t.is(c.limits.callers.failuresPerSecond, 0);
  t.is(c.limits.callers.maxHeldRefusals, 0);
  t.false(parse({ limits: { callers: { disabled: true } } }).limits.callers.enabled);
});

test("bad limits are refused with errors that name the option", (t) => {
  t.is(
    fails(t, { limits: { cache: { maxBytes: "64MB" } } }),
    'limits.cache.maxBytes must be a size of at least 1048576 bytes: an integer, or a string such as "64Mi"; got "64MB"',
  );
  t.regex(fails(t, { limits: { cache: { maxKeys: 0 } } }) ?? "", /^limits\.cache\.maxKeys /);
  t.regex(fails(t, { limits: { cache: { maxEntries: 5 } } }) ?? "", /limits\.cache.*maxEntries/);
  t.regex(fails(t, { limits: { store: { maxBytes: -1 } } }) ?? "", /^limits\.store\.maxBytes /);
  t.regex(fails(t, { limits: { refresh: { window: "1ms" } } }) ?? "", /^limits\.refresh\.window /);
  t.regex(fails(t, { limits: { refresh: { budget: 0 } } }) ?? "", /^limits\.refresh\.budget /);
  t.regex(
    fails(t, { limits: { providers: { maxConcurrent: 0 } } }) ?? "",
    /^limits\.providers\.maxConcurrent /,
  );
  t.regex(
    fails(t, { providers: { idp: { ...provider, limits: { ratePerSecond: "fast" } } } }) ?? "",
    /^providers\.idp\.limits\.ratePerSecond /,
  );
  t.regex(
    fails(t, { limits: { callers: { refusalHold: "1m" } } }) ?? "",
    /limits\.callers\.refusalHold must be at most 10s/,
  );
  t.regex(
    fails(t, { limits: { callers: { rpcs: { Nope: 1 } } } }) ?? "",
    /limits\.callers\.rpcs.*Nope/,
  );
  t.regex(
    fails(t, { limits: { callers: { rpcs: { GetToken: 0 } } } }) ?? "",
    /^limits\.callers\.rpcs\.GetToken /,
  );
  t.regex(fails(t, { limits: { speed: 1 } }) ?? "", /limits.*speed/);
  t.is(
    fails(t, { limits: { store: { tombstoneRetention: "10s" } } }),
    "limits.store.tombstoneRetention (10000 ms) must be at least claimLease + refreshTimeout (" +
      `${configDefaults.claimLeaseMs + configDefaults.refreshTimeoutMs} ms)`,
  );
});
