// The options that protect the cluster claim and the change log are validated
// once, with errors that name them.

import test from "ava";
import { ConfigError, configDefaults, parseConfig } from "./config.ts";

const parse = (raw: unknown, env: Record<string, string> = {}) =>
  parseConfig(raw, { env, readFile: () => "" });

test("claimLease shorter than refreshTimeout plus the claim margin is refused, naming both", (t) => {
  const err = t.throws(() => parse({ claimLease: "15s", refreshTimeout: "11s" }), {
    instanceOf: ConfigError,
  });
  t.is(
    err?.message,
    `claimLease (15000 ms) must be at least refreshTimeout + ${configDefaults.claimMarginMs} ms (${11_000 + configDefaults.claimMarginMs} ms): a replica still refreshing must never look dead to the others`,
  );
  const least = 11_000 + configDefaults.claimMarginMs;
  t.is(parse({ claimLease: `${least}ms`, refreshTimeout: "11s" }).claimLeaseMs, least);
  t.true(
    configDefaults.claimLeaseMs >= configDefaults.refreshTimeoutMs + configDefaults.claimMarginMs,
  );
});

test("the change log's margin and retention reach the MongoDB store, with their defaults", (t) => {
  const env = { MONGODB_URI: "mongodb://127.0.0.1:1/" };
  t.like(parse({}, env).store, {
    kind: "mongo",
    changeLogMarginMs: 5_000,
    changeLogRetentionMs: 120_000,
  });
  t.like(parse({ changeLogMargin: "2s", changeLogRetention: "8s" }, env).store, {
    changeLogMarginMs: 2_000,
    changeLogRetentionMs: 8_000,
  });
  t.throws(() => parse({ changeLogMargin: "2s", changeLogRetention: "7s" }, env), {
    instanceOf: ConfigError,
    message: "changeLogRetention (7000 ms) must be at least 4 × changeLogMargin (8000 ms)",
  });
  t.throws(() => parse({ changeLogMargin: "0s" }, env), {
    instanceOf: ConfigError,
    message: "changeLogMargin must be more than 0",
  });
  t.throws(() => parse({ changeLogRetention: "soon" }, env), {
    instanceOf: ConfigError,
    message: /^changeLogRetention must be a duration/,
  });
});
