// What a token vendor is built from: its ports, its tunables (their defaults
// live in config.ts, configDefaults) and its optional telemetry, and what it
// reports about itself.

import type { Meter, Tracer } from "@opentelemetry/api";
import type { GrantSettings, ProviderSettings } from "./catalog.ts";
import type { Clock, Random } from "./clock.ts";
import type { TokenVendError } from "./errors.ts";
import type { ForcedRefreshPolicy } from "./forced-refresh.ts";
import type { Logger } from "./logger.ts";
import type { ProviderLimiter } from "./provider-limiter.ts";
import type { TokenStore } from "./token-store.ts";
import type { UpstreamClient } from "./upstream.ts";

/** The vendor's tunables. */
export interface VendorTuning {
  /** Bound on one refresh, from store check to persisted result (also revocation at the provider). */
  readonly refreshTimeoutMs: number;
  /** Most concurrent WatchToken streams on this replica. */
  readonly maxStreams: number;
  /** How long a refresh claim holds before another replica may take it over. */
  readonly claimLeaseMs: number;
  /** How often a replica waiting on another's claim looks for the new generation. */
  readonly claimPollMs: number;
  /** How often cached keys are checked against a shared store; 0: off (one process owns the store). */
  readonly syncIntervalMs: number;
  /** A cached key unused this long, with nothing pinning it, is dropped. */
  readonly idleEvictMs: number;
  /** Background renewals of one key are at least this far apart. */
  readonly minRefreshIntervalMs: number;
  /** A grant used within this long is renewed in the background, so callers keep finding it fresh. */
  readonly grantKeepFreshMs: number;
  /** Most keys, and most estimated bytes, the key cache holds (key-cache.ts). */
  readonly cacheMaxKeys: number;
  readonly cacheMaxBytes: number;
  /** Refreshes callers force on a still-valid token with a minimum validity (forced-refresh.ts). */
  readonly forcedRefresh: ForcedRefreshPolicy;
}

export interface TokenVendorOptions extends VendorTuning {
  readonly store: TokenStore;
  readonly upstream: UpstreamClient;
  readonly providers: ReadonlyMap<string, ProviderSettings>;
  readonly grants: ReadonlyMap<string, GrantSettings>;
  /** Request slots per provider (provider-limiter.ts); unlimited by default. */
  readonly limiter?: ProviderLimiter;
  /** The service's lifetime: shared refreshes and store calls run under it, never under a caller's. */
  readonly signal: AbortSignal;
  readonly clock?: Clock;
  readonly random?: Random;
  readonly logger?: Logger;
  /** This replica's id, written into refresh claims; random by default. */
  readonly replicaId?: string;
  /** Refresh and stream-push spans; none by default. */
  readonly tracer?: Tracer;
  /** Refresh, cache, stream, watcher and claim metrics; a no-op meter by default. */
  readonly meter?: Meter;
  /** A session's token can no longer be renewed (REFRESH_FAILED, NO_REFRESH_TOKEN). */
  readonly onRenewalFailure?: (
    failure: { sessionId: string; provider: string; generation: number },
    err: TokenVendError,
  ) => void;
  /**
   * A stream of a session with no token waits here for a login in progress (a device
   * authorization) before it ends with SESSION_NOT_FOUND; resolves when there is none (left).
   */
  readonly awaitLogin?: (sessionId: string, provider: string, signal: AbortSignal) => Promise<void>;
}

export interface VendorStats {
  readonly cachedKeys: number;
  /** Refreshes that waited on another replica's claim. */
  readonly claimWaits: number;
  /** Dead claims taken over from a replica that stopped. */
  readonly claimTakeovers: number;
  /** Batched generation checks run. */
  readonly syncs: number;
  readonly inflightRefreshes: number;
  readonly watchers: number;
  readonly timers: number;
  readonly streams: number;
}
