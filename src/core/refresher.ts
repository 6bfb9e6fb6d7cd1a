// Single-flight refresh per key with backoff. Every caller of a key shares its
// one refresh in flight, which runs under the service's signal, never a
// caller's. A transient failure backs off (exponential, jittered, capped,
// Retry-After honoured) and callers get the failure without a new attempt
// until the backoff passes; a permanent one (the provider rejected the refresh
// token, or there is none) stops attempts for that generation.

import type { RefreshTrigger } from "../telemetry/metrics.ts";
import { backoffDelayMs } from "./backoff.ts";
import type { Catalog } from "./catalog.ts";
import type { Clock, Random } from "./clock.ts";
import { type ErrorCode, isTokenVendError, TokenVendError } from "./errors.ts";
import type { KeyEntry } from "./key-cache.ts";
import type { Logger } from "./logger.ts";
import type { RefreshInfo, RefreshTelemetry } from "./refresh-telemetry.ts";
import type { LiveRecord } from "./token.ts";
import { UpstreamError } from "./upstream.ts";

export interface RefresherOptions {
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  readonly catalog: Catalog;
  /** The service's lifetime: aborted on shutdown. */
  readonly signal: AbortSignal;
  readonly telemetry: RefreshTelemetry;
  /** One refresh of the key for the whole cluster (cluster-refresh.ts). */
  readonly run: (entry: KeyEntry, info: RefreshInfo) => Promise<LiveRecord>;
  /** The key's backoff changed: its next background attempt moves. */
  readonly onBackoff: (entry: KeyEntry) => void;
  /** The key's token can no longer be renewed (REFRESH_FAILED, NO_REFRESH_TOKEN). */
  readonly onPermanent?: ((entry: KeyEntry, err: TokenVendError) => void) | undefined;
}

export interface Refresher {
  /** The key's refresh in flight, or a new one; rejects at once while backing off or failed for good. */
  refresh(entry: KeyEntry, trigger: RefreshTrigger): Promise<LiveRecord>;
  /** A new generation was adopted: its refresh starts with a clean slate. */
  reset(entry: KeyEntry): void;
}

/** Failures that back off nothing: final for the generation, the key gone, or the service. */
const noBackoff: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "NO_REFRESH_TOKEN",
  "REFRESH_FAILED",
  "SESSION_NOT_FOUND",
  "GRANT_NOT_FOUND",
  "PROVIDER_NOT_FOUND",
  "SHUTTING_DOWN",
]);

export function createRefresher(opts: RefresherOptions): Refresher {
  const { clock, random, logger: log } = opts;

  const backoff = (entry: KeyEntry, e: TokenVendError, retryAfterMs: number | undefined) => {
    const s = entry.refresh;
    s.failures++;
    s.lastError = e;
    const { backoff: policy } = opts.catalog.provider(entry.provider);
    s.nextAttemptAt = clock.now() + backoffDelayMs(s.failures, policy, random, retryAfterMs);
    opts.onBackoff(entry);
  };

  /** Turns a refresh failure into the domain error and updates the key's backoff state. */
  const classify = (entry: KeyEntry, err: unknown): TokenVendError => {
    const s = entry.refresh;
    if (isTokenVendError(err)) {
      if (err.code === "NO_REFRESH_TOKEN") {
        s.permanent = err;
        opts.onPermanent?.(entry, err);
      }
      // Anything that may pass (a store down, a provider unavailable or shedding, a token
      // that does not open) backs off, at least as long as it said: with no backoff the
      // scheduler would find the key due again at once, a hot loop in the background.
      if (!noBackoff.has(err.code)) backoff(entry, err, err.retryAfterMs);
      return err;
    }
    if (err instanceof UpstreamError && err.permanent) {
      const e = new TokenVendError(
        "REFRESH_FAILED",
        `provider "${entry.provider}" rejected the refresh (${err.oauthError ?? "error"})`,
        { cause: err },
      );
      s.permanent = e;
      log.warn({ provider: entry.provider, oauthError: err.oauthError }, "refresh rejected");
      opts.onPermanent?.(entry, e);
      return e;
    }
    const e = new TokenVendError(
      "UPSTREAM_UNAVAILABLE",
      opts.signal.aborted
        ? "the service is shutting down"
        : `provider "${entry.provider}" is unavailable`,
      {
        cause: err,
        ...(err instanceof UpstreamError && err.retryAfterMs !== undefined
          ? { retryAfterMs: err.retryAfterMs }
          : {}),
      },
    );
    backoff(entry, e, err instanceof UpstreamError ? err.retryAfterMs : undefined);
    log.warn(
      {
        provider: entry.provider,
        attempt: s.failures,
        retryInMs: s.nextAttemptAt - clock.now(),
        status: err instanceof UpstreamError ? err.status : undefined,
        err: err instanceof Error ? err.message : String(err),
      },
      "refresh failed, backing off",
    );
    return e;
  };

  return {
    refresh(entry, trigger) {
      const s = entry.refresh;
      if (s.inflight !== undefined) return s.inflight;
      if (s.permanent !== undefined) return Promise.reject(s.permanent);
      if (s.lastError !== undefined && clock.now() < s.nextAttemptAt) {
        return Promise.reject(s.lastError);
      }
      const run = opts.telemetry.measure(
        entry,
        trigger,
        (span) => {
          s.inflightSpan = span;
        },
        (info) =>
          opts.run(entry, info).catch((err: unknown) => {
            throw classify(entry, err);
          }),
      );
      s.inflight = run;
      const clear = () => {
        if (s.inflight === run) {
          s.inflight = undefined;
          s.inflightSpan = undefined;
        }
      };
      run.then(clear, clear);
      return run;
    },
    reset(entry) {
      const s = entry.refresh;
      s.failures = 0;
      s.nextAttemptAt = 0;
      s.lastError = undefined;
      s.permanent = undefined;
    },
  };
}
