// The token lifecycle, wired from one part per concern, and the serving path:
// a token is served from memory while valid; a stale one is served at once
// while one background refresh runs (stale-while-revalidate); only a caller
// that finds no valid token waits, for the key's one shared refresh.
//
//   key-cache.ts          the keys this replica knows and their active generation
//   refresher.ts          single-flight refresh with backoff
//   cluster-refresh.ts    one redemption per cluster: store first, then a claim
//   renewal-scheduler.ts  the per-key timers of background renewal
//   generation-sync.ts    renewals and revocations made by other replicas
//   session-writes.ts     stored logins and revocation
//   token-stream.ts       WatchToken streams, fanned out by watch-hub.ts
//   classified-store.ts   store failures classified once; aborts let through

import { attr, createVendorMetrics, noopMeter } from "../telemetry/metrics.ts";
import { abandonWait } from "./abandon-wait.ts";
import { createCatalog } from "./catalog.ts";
import { classifiedStore } from "./classified-store.ts";
import { systemClock, systemRandom } from "./clock.ts";
import { createClusterRefresh } from "./cluster-refresh.ts";
import { isTokenVendError, notFoundError, shuttingDownError, TokenVendError } from "./errors.ts";
import { createForcedRefreshes } from "./forced-refresh.ts";
import { cacheInstruments, observeGauges } from "./gauges.ts";
import { startGenerationSync } from "./generation-sync.ts";
import { createKeyCache, type KeyEntry } from "./key-cache.ts";
import { refreshAt, tokenState, unusableAt } from "./lifetime.ts";
import { errorText, noopLogger } from "./logger.ts";
import { createLookupCounter } from "./lookup-counter.ts";
import { createProviderLimiter, unlimitedProviders } from "./provider-limiter.ts";
import { createRefreshTelemetry } from "./refresh-telemetry.ts";
import { createRefresher } from "./refresher.ts";
import { createRenewalScheduler } from "./renewal-scheduler.ts";
import { createSessionReads } from "./session-reads.ts";
import {
  createSessionWrites,
  type ProviderFailure,
  type RevokeInput,
  type RevokeResult,
  type StoreTokensInput,
} from "./session-writes.ts";
import { grantKey, isLive, keyId, type LiveRecord, sessionKey, type TokenKey } from "./token.ts";
import {
  accessError,
  type Binding,
  createStreams,
  type WatchEvent,
  type WatchReason,
  type WatchTarget,
} from "./token-stream.ts";
import type { TokenVendorOptions, VendorStats } from "./vendor-options.ts";
import { createWatchHub, type Listener } from "./watch-hub.ts";

export interface TokenVendor {
  storeUpstreamTokens(input: StoreTokensInput, signal?: AbortSignal): Promise<number>;
  getValidTokens(
    q: { sessionId: string; provider: string; minValidityMs?: number } & Binding,
    signal?: AbortSignal,
  ): Promise<LiveRecord>;
  /** `binding.owner` set: a session owned by anyone else is PERMISSION_DENIED (NOT_OWNER). */
  getAllUpstreamCredentials(
    sessionId: string,
    signal?: AbortSignal,
    binding?: Binding,
  ): Promise<{ credentials: Map<string, LiveRecord>; failures: ProviderFailure[] }>;
  getToken(grant: string, minValidityMs?: number, signal?: AbortSignal): Promise<LiveRecord>;
  /**
   * A stream of a key's tokens, by push: the current token, then every newer
   * generation, by plain calls from the renewal's fan-out. Returns a cancel.
   */
  watch(target: WatchTarget, listener: Listener<WatchEvent>, signal: AbortSignal): () => void;
  revokeSession(q: RevokeInput, signal?: AbortSignal): Promise<RevokeResult>;
  /**
   * Redeems the session's refresh token now if `generation` is still its active one (the
   * unused-refresh renewal), under the cluster claim like any refresh; returns the active record.
   */
  renewSession(sessionId: string, provider: string, generation: number): Promise<LiveRecord>;
  stats(): VendorStats;
  /** Ends every stream with SHUTTING_DOWN and stops background work; calls in flight go on. */
  close(): Promise<void>;
}

export function createTokenVendor(opts: TokenVendorOptions): TokenVendor {
  const clock = opts.clock ?? systemClock;
  const random = opts.random ?? systemRandom;
  const logger = opts.logger ?? noopLogger;
  const serviceSignal = opts.signal;
  const catalog = createCatalog(opts.providers, opts.grants);
  const metrics = createVendorMetrics(opts.meter ?? noopMeter);
  const store = classifiedStore(opts.store, (err) => {
    // Not transient: an operator must look at the keys (docs/STORAGE.md, "Keys").
    logger.error({ reason: err.reason, err: errorText(err) }, "a stored token cannot be opened");
    metrics.unreadable.add(1, { [attr.unreadableReason]: err.reason });
  });
  const telemetry = createRefreshTelemetry({ tracer: opts.tracer, metrics, clock });
  const lookups = createLookupCounter(metrics);
  const forced = createForcedRefreshes(opts.forcedRefresh, metrics);
  const hub = createWatchHub<WatchEvent>({
    onFirst: (id) => ifCached(id, scheduler.update),
    onLast: (id) => ifCached(id, scheduler.update),
  });
  const streams = createStreams({ hub, maxStreams: opts.maxStreams, tracer: opts.tracer });
  const cacheMetrics = cacheInstruments(metrics, "tokens");
  const cache = createKeyCache({
    clock,
    idleEvictMs: opts.idleEvictMs,
    maxEntries: opts.cacheMaxKeys,
    maxBytes: opts.cacheMaxBytes,
    pinned: (e) =>
      hub.has(e.id) ||
      e.loading !== undefined ||
      e.refresh.inflight !== undefined ||
      e.refresh.unsaved !== undefined,
    onDrop: (e) => scheduler.cancel(e),
    onEvict: cacheMetrics.onEvict,
  });
  const ifCached = (id: string, fn: (e: KeyEntry) => void) => {
    const e = cache.find(id);
    if (e !== undefined) fn(e);
  };
  const scheduler = createRenewalScheduler({
    clock,
    minRefreshIntervalMs: opts.minRefreshIntervalMs,
    holds: cache.holds,
    needed: (e) =>
      hub.has(e.id) ||
      e.refresh.unsaved !== undefined ||
      (e.key.kind === "grant" && clock.now() - e.lastUsedAt < opts.grantKeepFreshMs),
    onDue: (e) =>
      refresher.refresh(e, "background").catch((err: unknown) => {
        if (isTokenVendError(err, "REFRESH_FAILED") || isTokenVendError(err, "NO_REFRESH_TOKEN")) {
          hub.end(e.id, err);
        } else if (!isTokenVendError(err, "SESSION_NOT_FOUND") && !scheduler.armed(e)) {
          // Refused without an attempt (backoff not over yet): nothing re-armed it.
          scheduler.update(e);
        }
      }),
  });

  /** Makes `record` the cached generation if newer; `reason` pushes it to the key's streams. */
  const adopt = (entry: KeyEntry, record: LiveRecord, reason: WatchReason | undefined) => {
    if (!cache.holds(entry)) return;
    if (entry.record !== undefined && entry.record.generation >= record.generation) return;
    const lifetime = catalog.provider(entry.provider).lifetime;
    entry.record = record;
    cache.resized(entry);
    entry.refreshAt = refreshAt(record.tokens, lifetime, random);
    refresher.reset(entry);
    if (reason !== undefined) {
      entry.renewedAt = clock.now();
      hub.publish(entry.id, { record, reason, cause: telemetry.activeSpan()?.spanContext() });
    }
    scheduler.update(entry);
  };
  /** Drops a revoked key, ending its streams with NOT_FOUND. */
  const forget = (key: TokenKey) => {
    ifCached(keyId(key), cache.drop);
    hub.end(keyId(key), notFoundError(key));
  };
  const forgetEntry = (entry: KeyEntry) => {
    if (cache.holds(entry)) forget(entry.key);
  };

  const cluster = createClusterRefresh({
    store,
    upstream: opts.upstream,
    catalog,
    clock,
    logger,
    telemetry,
    metrics,
    signal: serviceSignal,
    refreshTimeoutMs: opts.refreshTimeoutMs,
    replicaId: opts.replicaId ?? `replica-${Math.floor(random() * 2 ** 48).toString(36)}`,
    claimLeaseMs: opts.claimLeaseMs,
    claimPollMs: opts.claimPollMs,
    adopt,
    forget: forgetEntry,
    holds: cache.holds,
    limiter: opts.limiter ?? createProviderLimiter({ clock, limitsOf: () => unlimitedProviders }),
  });
  const refresher = createRefresher({
    clock,
    random,
    logger,
    catalog,
    signal: serviceSignal,
    telemetry,
    run: cluster.run,
    onBackoff: scheduler.update,
    onPermanent: (e, err) => {
      if (e.key.kind === "session" && e.record !== undefined) {
        const { sessionId, provider } = e.key;
        opts.onRenewalFailure?.({ sessionId, provider, generation: e.record.generation }, err);
      }
    },
  });
  const writes = createSessionWrites({
    store,
    upstream: opts.upstream,
    catalog,
    cache,
    logger,
    signal: serviceSignal,
    upstreamTimeoutMs: opts.refreshTimeoutMs,
    adopt,
    forget,
  });
  const sync = startGenerationSync({
    store,
    cache,
    clock,
    logger,
    intervalMs: opts.syncIntervalMs,
    signal: serviceSignal,
    adopt,
    forget: forgetEntry,
  });
  const stopGauges = observeGauges([
    [metrics.streams, () => streams.count],
    [metrics.watchers, () => hub.idCount()],
    ...cacheMetrics.gauges(cache),
  ]);
  let closing = false;
  serviceSignal.addEventListener("abort", () => scheduler.stop(), { once: true });

  /** The key's store read when it is not in memory; concurrent readers share it. */
  const load = (entry: KeyEntry, signal: AbortSignal | undefined) => {
    entry.loading ??= store
      .getActive(entry.key, { signal: serviceSignal })
      .then((r) => {
        if (isLive(r)) adopt(entry, r, undefined);
        return entry.record;
      })
      .finally(() => {
        entry.loading = undefined;
      });
    return abandonWait(entry.loading, signal);
  };

  /** The valid token of a key: cached, stale-while-revalidate, or refreshed and waited for. */
  const serve = async (
    entry: KeyEntry,
    minValidityMs: number,
    binding: Binding,
    signal: AbortSignal | undefined,
  ): Promise<LiveRecord> => {
    entry.lastUsedAt = clock.now();
    const cached = entry.record !== undefined;
    const record = entry.record ?? (await load(entry, signal));
    if (record === undefined && entry.key.kind === "session") {
      lookups.count(entry.provider, false);
      // Caller-chosen ids that match nothing are not kept.
      cache.dropUnpinned(entry);
      throw notFoundError(entry.key);
    }
    const lifetime = catalog.provider(entry.provider).lifetime;
    if (record !== undefined) {
      const refused = accessError(record, binding);
      if (refused !== undefined) throw refused;
      const now = clock.now();
      const state = tokenState(record.tokens, lifetime, entry.refreshAt, now, minValidityMs);
      if (state !== "expired") {
        if (state === "stale" && now >= entry.renewedAt + opts.minRefreshIntervalMs) {
          void refresher.refresh(entry, "revalidate").catch(() => {});
        }
        // A grant in use again after a quiet spell gets its background renewal back.
        if (entry.key.kind === "grant" && !scheduler.armed(entry)) scheduler.update(entry);
        lookups.count(entry.provider, cached);
        return record;
      }
      // Valid, but not as long as this caller asks: a refresh it forces, bounded per key.
      if (now < unusableAt(record.tokens, lifetime)) {
        forced.admit(entry, record, lifetime, minValidityMs, now);
      }
    }
    lookups.count(entry.provider, false);
    const joined = entry.refresh.inflight !== undefined;
    const pending = refresher.refresh(entry, "caller");
    // The caller's span links to the refresh it waits on, shared or its own.
    const refreshSpan = entry.refresh.inflightSpan;
    if (refreshSpan !== undefined) {
      telemetry
        .activeSpan()
        ?.addLink({ context: refreshSpan, attributes: { [attr.shared]: joined } });
    }
    const renewed = await abandonWait(pending, signal);
    // A renewal that cannot meet minValidityMs is still served while it is valid at all.
    if (clock.now() >= unusableAt(renewed.tokens, lifetime)) {
      throw new TokenVendError(
        "UPSTREAM_UNAVAILABLE",
        `provider "${entry.provider}" issued a token that is already expired`,
      );
    }
    return renewed;
  };

  const readSession = createSessionReads({
    store,
    catalog,
    cache,
    adopt,
    serve: (entry, signal) => serve(entry, 0, {}, signal),
  });
  const sessionEntry = (sessionId: string, provider: string) => {
    catalog.provider(provider);
    return cache.entry(sessionKey(sessionId, provider), provider);
  };
  const grantEntry = (grant: string) => cache.entry(grantKey(grant), catalog.grant(grant).provider);

  return {
    storeUpstreamTokens: (input, signal) => writes.store(input, signal),
    async getValidTokens(q, signal) {
      return serve(sessionEntry(q.sessionId, q.provider), q.minValidityMs ?? 0, q, signal);
    },
    getAllUpstreamCredentials: (sessionId, signal, binding = {}) =>
      readSession(sessionId, signal, binding),
    async getToken(grant, minValidityMs, signal) {
      return serve(grantEntry(grant), minValidityMs ?? 0, {}, signal);
    },
    watch(target, listener, signal) {
      let entry: KeyEntry;
      try {
        entry =
          target.kind === "session"
            ? sessionEntry(target.sessionId, target.provider)
            : grantEntry(target.grant);
      } catch (err) {
        listener.end(err as Error);
        return () => {};
      }
      if (closing || serviceSignal.aborted) {
        listener.end(shuttingDownError());
        return () => {};
      }
      const binding: Binding = target.kind === "session" ? target : {};
      const awaitLogin = opts.awaitLogin;
      // Every message is checked, not only the first: a later login stored on
      // the session for another subject, client or owner ends the stream.
      return streams.open(
        entry.id,
        entry.provider,
        listener,
        signal,
        () =>
          serve(entry, 0, binding, signal).catch(async (err: unknown) => {
            // A session being logged in (device authorization): its first token is the first message.
            if (!isTokenVendError(err, "SESSION_NOT_FOUND") || target.kind !== "session") throw err;
            if (awaitLogin === undefined) throw err;
            await awaitLogin(target.sessionId, target.provider, signal);
            return serve(sessionEntry(target.sessionId, target.provider), 0, binding, signal);
          }),
        (record) => accessError(record, binding),
      );
    },
    revokeSession: (q, signal) => writes.revoke(q, signal),
    async renewSession(sessionId, provider, generation) {
      const entry = sessionEntry(sessionId, provider);
      const known = entry.record !== undefined;
      try {
        const current = entry.record ?? (await load(entry, undefined));
        if (current === undefined) throw notFoundError(entry.key);
        if (current.generation !== generation) return current;
        return await refresher.refresh(entry, "background");
      } finally {
        // Found by a scan, not asked for: it does not stay in this replica's memory.
        if (!known) cache.dropUnpinned(entry);
      }
    },
    stats() {
      let inflight = 0;
      for (const e of cache.entries()) if (e.refresh.inflight !== undefined) inflight++;
      return {
        cachedKeys: cache.size,
        ...cluster.counts(),
        syncs: sync.count,
        inflightRefreshes: inflight,
        watchers: hub.idCount(),
        timers: scheduler.count,
        streams: streams.count,
      };
    },
    async close() {
      closing = true;
      sync.stop();
      scheduler.stop();
      stopGauges();
      lookups.close();
      hub.endAll(shuttingDownError());
    },
  };
}
