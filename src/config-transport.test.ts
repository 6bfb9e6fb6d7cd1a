// The listeners' limits are read from grpc, http and health beside their addresses, default to
// config-defaults.ts, and a bad value is refused naming its option.

import test from "ava";
import { ConfigError, configDefaults, parseConfig } from "./config.ts";

const parse = (raw: unknown) => parseConfig(raw, { env: {}, readFile: () => "" });

test("every transport limit has its default when the config says nothing", (t) => {
  const d = configDefaults.transportLimits;
  t.deepEqual(parse({}).transportLimits, {
    grpc: d.grpc,
    http: d.http,
    maxHealthWatches: d.maxHealthWatches,
    maxProviderResponseBytes: d.maxProviderResponseBytes,
  });
  // What the issue asked for: every one of them bounded by default.
  t.true(d.grpc.maxConnectionIdleMs > 0 && d.grpc.maxConnectionAgeMs > 0);
  t.true(d.http.headersTimeoutMs <= d.http.requestTimeoutMs);
});

test("limits are read beside the listen addresses, durations with units, 0 turning idle and age off", (t) => {
  const l = parse({
    grpc: {
      listen: "127.0.0.1:1",
      maxConcurrentStreams: 50,
      keepaliveTime: "30s",
      keepaliveTimeout: "5s",
      maxConnectionIdle: "0s",
      maxConnectionAge: "0s",
      maxConnectionAgeGrace: "1m",
      maxSessionMemoryMB: 32,
    },
    http: {
      headersTimeout: "2s",
      requestTimeout: "5s",
      keepAliveTimeout: "1s",
      maxConnections: 100,
      maxConcurrentStreams: 10,
      maxSessionMemoryMB: 4,
      idleTimeout: "30s",
    },
    health: { maxWatches: 7 },
    maxProviderResponseBytes: 2048,
  }).transportLimits;
  t.deepEqual(l, {
    grpc: {
      maxConcurrentStreams: 50,
      keepaliveTimeMs: 30_000,
      keepaliveTimeoutMs: 5_000,
      maxConnectionIdleMs: 0,
      maxConnectionAgeMs: 0,
      maxConnectionAgeGraceMs: 60_000,
      maxSessionMemoryMB: 32,
    },
    http: {
      headersTimeoutMs: 2_000,
      requestTimeoutMs: 5_000,
      keepAliveTimeoutMs: 1_000,
      maxConnections: 100,
      maxConcurrentStreams: 10,
      maxSessionMemoryMB: 4,
      idleTimeoutMs: 30_000,
    },
    maxHealthWatches: 7,
    maxProviderResponseBytes: 2048,
  });
});

test("a bad limit is refused, naming the option and what it must be", (t) => {
  const refused = (raw: unknown, message: RegExp) =>
    t.throws(() => parse(raw), { instanceOf: ConfigError, message });
  refused(
    { grpc: { maxConcurrentStreams: 0 } },
    /^grpc\.maxConcurrentStreams must be a number from 1/,
  );
  refused({ grpc: { keepaliveTime: "0s" } }, /^grpc\.keepaliveTime must be from 1ms to 1d/);
  refused({ grpc: { keepaliveTimeout: "forever" } }, /^grpc\.keepaliveTimeout must be a duration/);
  refused(
    { grpc: { maxConnectionAge: "31d" } },
    /^grpc\.maxConnectionAge must be 0 \(off\) or from 1ms to 30d/,
  );
  refused({ grpc: { maxSessionMemoryMB: 1.5 } }, /^grpc\.maxSessionMemoryMB must be an integer/);
  refused({ grpc: { keepAlive: "1s" } }, /^grpc\.keepAlive is not an option/);
  refused({ http: { maxConnections: -1 } }, /^http\.maxConnections must be a number from 1/);
  refused(
    { http: { headersTimeout: "20s", requestTimeout: "10s" } },
    /^http\.headersTimeout \(20000 ms\) must not be longer than http\.requestTimeout \(10000 ms\)$/,
  );
  refused({ health: { maxWatches: "many" } }, /^health\.maxWatches must be a number/);
  refused(
    { maxProviderResponseBytes: 100 },
    /^maxProviderResponseBytes must be a number from 1024/,
  );
});
