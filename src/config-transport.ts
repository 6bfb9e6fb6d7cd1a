// The listeners' connection limits, read from the `grpc`, `http` and `health` sections beside
// their `listen` addresses, and the cap on what a provider may answer. Each bounds what one
// client can hold on a replica (streams, connections, session memory, time to send a request);
// the numbers and why: config-defaults.ts (`transportLimits`); what each does: README's Configuration.

import { configDefaults } from "./config-defaults.ts";
import { ConfigError, duration, int } from "./config-values.ts";
import type { GrpcConnectionLimits, HttpConnectionLimits } from "./transport/index.ts";

export interface TransportLimitsConfig {
  /** The gRPC listener's, per connection (grpc-js). */
  readonly grpc: GrpcConnectionLimits;
  /** The HTTP listener's (Connect, gRPC-Web, gRPC; HTTP/1.1 and h2c). */
  readonly http: HttpConnectionLimits;
  /** grpc.health.v1 Watch calls open at once, per listener that serves health. */
  readonly maxHealthWatches: number;
  /** The largest response read from a provider (token, discovery, JWKS, revocation). */
  readonly maxProviderResponseBytes: number;
}

export const grpcLimitKeys = [
  "maxConcurrentStreams",
  "keepaliveTime",
  "keepaliveTimeout",
  "maxConnectionIdle",
  "maxConnectionAge",
  "maxConnectionAgeGrace",
  "maxSessionMemoryMB",
] as const;

export const httpLimitKeys = [
  "headersTimeout",
  "requestTimeout",
  "keepAliveTimeout",
  "maxConnections",
  "maxConcurrentStreams",
  "maxSessionMemoryMB",
  "idleTimeout",
] as const;

export const healthLimitKeys = ["maxWatches"] as const;
export const transportRootKeys = ["maxProviderResponseBytes"] as const;

const day = 86_400_000;

/** A duration from 1 ms to `max` ms, or 0 when `zeroOff` (the limit is off). */
function span(v: unknown, at: string, dflt: number, max: number, zeroOff = false): number {
  const ms = duration(v, at, dflt);
  if ((ms === 0 && !zeroOff) || ms > max) {
    throw new ConfigError(
      `${at} must be ${zeroOff ? "0 (off) or " : ""}from 1ms to ${max / day}d; got ${JSON.stringify(v)}`,
    );
  }
  return ms;
}

export function parseTransportLimits(sections: {
  readonly root: Record<string, unknown>;
  readonly grpc: Record<string, unknown>;
  readonly http: Record<string, unknown>;
  readonly health: Record<string, unknown>;
}): TransportLimitsConfig {
  const { root, grpc: g, http: h, health } = sections;
  const d = configDefaults.transportLimits;
  const grpc: GrpcConnectionLimits = {
    maxConcurrentStreams: int(
      g.maxConcurrentStreams,
      "grpc.maxConcurrentStreams",
      d.grpc.maxConcurrentStreams,
      1,
      1_000_000,
    ),
    keepaliveTimeMs: span(g.keepaliveTime, "grpc.keepaliveTime", d.grpc.keepaliveTimeMs, day),
    keepaliveTimeoutMs: span(
      g.keepaliveTimeout,
      "grpc.keepaliveTimeout",
      d.grpc.keepaliveTimeoutMs,
      day,
    ),
    maxConnectionIdleMs: span(
      g.maxConnectionIdle,
      "grpc.maxConnectionIdle",
      d.grpc.maxConnectionIdleMs,
      30 * day,
      true,
    ),
    maxConnectionAgeMs: span(
      g.maxConnectionAge,
      "grpc.maxConnectionAge",
      d.grpc.maxConnectionAgeMs,
      30 * day,
      true,
    ),
    maxConnectionAgeGraceMs: span(
      g.maxConnectionAgeGrace,
      "grpc.maxConnectionAgeGrace",
      d.grpc.maxConnectionAgeGraceMs,
      30 * day,
    ),
    maxSessionMemoryMB: int(
      g.maxSessionMemoryMB,
      "grpc.maxSessionMemoryMB",
      d.grpc.maxSessionMemoryMB,
      1,
      4096,
    ),
  };
  const http: HttpConnectionLimits = {
    headersTimeoutMs: span(h.headersTimeout, "http.headersTimeout", d.http.headersTimeoutMs, day),
    requestTimeoutMs: span(h.requestTimeout, "http.requestTimeout", d.http.requestTimeoutMs, day),
    keepAliveTimeoutMs: span(
      h.keepAliveTimeout,
      "http.keepAliveTimeout",
      d.http.keepAliveTimeoutMs,
      day,
    ),
    maxConnections: int(
      h.maxConnections,
      "http.maxConnections",
      d.http.maxConnections,
      1,
      1_000_000,
    ),
    maxConcurrentStreams: int(
      h.maxConcurrentStreams,
      "http.maxConcurrentStreams",
      d.http.maxConcurrentStreams,
      1,
      1_000_000,
    ),
    maxSessionMemoryMB: int(
      h.maxSessionMemoryMB,
      "http.maxSessionMemoryMB",
      d.http.maxSessionMemoryMB,
      1,
      4096,
    ),
    idleTimeoutMs: span(h.idleTimeout, "http.idleTimeout", d.http.idleTimeoutMs, day),
  };
  // Node refuses a headers timeout longer than the request timeout: say so by name.
  if (http.headersTimeoutMs > http.requestTimeoutMs) {
    throw new ConfigError(
      `http.headersTimeout (${http.headersTimeoutMs} ms) must not be longer than http.requestTimeout (${http.requestTimeoutMs} ms)`,
    );
  }
  return {
    grpc,
    http,
    maxHealthWatches: int(health.maxWatches, "health.maxWatches", d.maxHealthWatches, 1, 1_000_000),
    maxProviderResponseBytes: int(
      root.maxProviderResponseBytes,
      "maxProviderResponseBytes",
      d.maxProviderResponseBytes,
      1024,
      16 * 1024 * 1024,
    ),
  };
}
