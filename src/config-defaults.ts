// Every default of the service, in one place: the config layer fills in what
// the config leaves out from here, and inner factories take required numbers.

import type { BackoffPolicy } from "./core/backoff.ts";
import type { LifetimePolicy } from "./core/lifetime.ts";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

export const configDefaults = {
  grpcListen: "127.0.0.1:50051",
  httpListen: "127.0.0.1:8080",
  logLevel: "info" as LogLevel,
  refreshTimeoutMs: 30_000,
  shutdownGraceMs: 10_000,
  maxStreams: 10_000,
  // The largest valid request (StoreUpstreamTokens with three 16 KiB tokens and a
  // hundred scopes) is about 76 KB; anything much bigger is not a token request.
  maxMessageBytes: 128 * 1024,
  providerTimeoutMs: 10_000,
  syncIntervalMs: 1_000,
  // At least refreshTimeoutMs + claimMarginMs: a holder still refreshing must never look dead.
  claimLeaseMs: 35_000,
  // What a claim's lease must leave after the refresh's timeout: the holder's write of the
  // provider's answer into its claim, and clock skew between replicas (leases are wall-clock).
  claimMarginMs: 5_000,
  claimPollMs: 50,
  idleEvictMs: 600_000,
  minRefreshIntervalMs: 5_000,
  grantKeepFreshMs: 600_000,
  sweepIntervalMs: 60_000,
  /** The change log (servers without change streams): readers' look-back, and how long records stay. */
  changeLogMarginMs: 5_000,
  changeLogRetentionMs: 120_000,
  mongoDbName: "tokenvend",
  /** How long a StartAuthorization state can be completed. */
  authorizationStateTtlMs: 600_000,
  /** Per provider: what a login asks for when the caller names no scopes. */
  authorizationScopes: ["openid", "offline_access"] as readonly string[],
  /** Per provider: renew sessions whose refresh token went unused this long; 0 is off. */
  maxUnusedRefreshMs: 0,
  /** How often (and, per cluster, how fast) unused refresh tokens are looked for and renewed. */
  unusedRefreshScanIntervalMs: 60_000,
  unusedRefreshRatePerSecond: 5,
  /** Failure webhooks: attempts, per-request timeout and the retry backoff. */
  webhookMaxAttempts: 8,
  webhookTimeoutMs: 10_000,
  webhookBackoff: {
    initialMs: 1_000,
    multiplier: 2,
    maxMs: 300_000,
    jitter: 0.2,
    maxRetryAfterMs: 600_000,
  } satisfies BackoffPolicy as BackoffPolicy,
  /** A replica records itself in a shared store this often; missing 3 beats, it is gone. */
  replicaHeartbeatMs: 10_000,
  /** tokenvend export: keys per page read from the store and per sealed chunk of the file. */
  exportPageSize: 200,
  /** tokenvend import: inserts in flight at once. */
  importConcurrency: 8,
  /** Host names the HTTP listener answers to when http.allowedHosts is not set. */
  allowedHosts: ["localhost", "127.0.0.1", "::1"] as readonly string[],
  tlsReloadIntervalMs: 30_000,
  /** Per JWT issuer (auth.jwt.issuers[], auth.sessionJwt.issuers[]). */
  jwt: {
    algorithms: ["RS256", "ES256"] as readonly string[],
    clockToleranceMs: 30_000,
    jwksCooldownMs: 30_000,
    jwksMaxAgeMs: 600_000,
    jwksTimeoutMs: 5_000,
    cacheEntries: 10_000,
  },
  /**
   * The listeners' connection limits (grpc.*, http.*, health.* and maxProviderResponseBytes in
   * the config; src/config-transport.ts). Sized so that one client cannot hold a replica's
   * memory or its stream slots; README's Configuration says what each bounds.
   */
  transportLimits: {
    grpc: {
      // bench:watch holds 1,250 WatchToken streams per connection; a gateway multiplexes one
      // stream per session on a few connections. Beyond this a client queues (HTTP/2 SETTINGS).
      maxConcurrentStreams: 2_000,
      // A dead client (no FIN: a crashed node, a cut network) is found within 80 s and its
      // streams end, instead of holding their slots until TCP gives up (hours).
      keepaliveTimeMs: 60_000,
      keepaliveTimeoutMs: 20_000,
      maxConnectionIdleMs: 600_000,
      // Connections move to new replicas after a scale-out; streams reconnect (UNAVAILABLE).
      maxConnectionAgeMs: 3_600_000,
      maxConnectionAgeGraceMs: 600_000,
      // Node's own default; ~1.3 KB per open stream (measured), so 2,000 streams and their
      // messages fit, and a client that keeps opening more is refused (RESOURCE_EXHAUSTED).
      maxSessionMemoryMB: 10,
    },
    http: {
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 5_000,
      maxConnections: 4_096,
      maxConcurrentStreams: 200,
      maxSessionMemoryMB: 10,
      idleTimeoutMs: 120_000,
    },
    // Probes use Check; Watch is for client-side health checking, one per client channel.
    maxHealthWatches: 1_000,
    // A token response with three 16 KiB tokens is ~50 KB; a discovery document or key set of
    // a real provider is a few KB.
    maxProviderResponseBytes: 64 * 1024,
  },
  /** Per provider (providers.NAME.lifetime). */
  lifetime: {
    freshness: 0.75,
    refreshMarginMs: 60_000,
    clockSkewMs: 30_000,
    refreshJitter: 0.1,
    defaultLifetimeMs: 3_600_000,
  } satisfies LifetimePolicy as LifetimePolicy,
  /**
   * The bounds that keep a replica inside its memory and its providers' rate limits whatever
   * callers send (docs/OPERATIONS.md, "Limits and the memory budget"). The memory figures fit
   * k8s/deployment.yaml's 512Mi limit with the budget measured in docs/BENCHMARKS.md ("Memory
   * per key").
   */
  limits: {
    /** The vendor's key cache: keys, and their estimated bytes. */
    cache: { maxKeys: 100_000, maxBytes: 64 * 1024 * 1024 },
    /** Exchanged tokens (RFC 8693), cached apart. */
    exchangeCache: { maxKeys: 10_000, maxBytes: 16 * 1024 * 1024 },
    /** The memory and file stores (MongoDB is bounded by its own disks). */
    store: { maxKeys: 100_000, maxBytes: 48 * 1024 * 1024, tombstoneRetentionMs: 3_600_000 },
    /** The memory and file flow state stores: pending logins and device authorizations. */
    flowStates: { maxRecords: 10_000 },
    /** Refreshes callers force with a minimum validity, per key. */
    forcedRefresh: { minIntervalMs: 5_000, budget: 20, windowMs: 3_600_000 },
    /** Per provider (providers.NAME.limits overrides). */
    providers: { maxConcurrent: 8, ratePerSecond: 50, maxQueued: 10_000 },
    /** Per caller: the authenticated identity, or the peer's address without authentication. */
    callers: {
      requestsPerSecond: 1_000,
      rpcs: {} as Readonly<Record<string, number>>,
      maxStreams: 1_000,
      newSessionsPerSecond: 100,
      /** Calls failing by the caller's mistake (an unknown session, a denied RPC); 0: off. */
      failuresPerSecond: 100,
      /** Refusals wait up to this before they are answered (auth/caller-limits.ts)... */
      refusalHoldMs: 1_000,
      /** ...this many at once: each holds its call's stream and ≤ 80 KiB of unread body. */
      maxHeldRefusals: 1_000,
    },
  },
  /** Per provider (providers.NAME.backoff). */
  backoff: {
    initialMs: 1_000,
    multiplier: 2,
    maxMs: 60_000,
    jitter: 0.2,
    maxRetryAfterMs: 600_000,
  } satisfies BackoffPolicy as BackoffPolicy,
};
