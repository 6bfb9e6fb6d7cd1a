// The token lifecycle: serve from memory, refresh single-flight per key under the
// service's own signal, back off on transient errors, persist before returning,
// and push every new generation to the key's watchers.

import {
  type Attributes,
  type Context,
  context,
  type Meter,
  type ObservableResult,
  type Span,
  type SpanContext,
  SpanKind,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { type DescribeError, instrument } from "../telemetry/instrument.ts";
import {
  attr,
  createVendorMetrics,
  noopMeter,
  type RefreshOutcome,
  type RefreshSource,
  type RefreshTrigger,
} from "../telemetry/metrics.ts";
import { abandonWait } from "./abandon-wait.ts";
import { type BackoffPolicy, backoffDelayMs, defaultBackoffPolicy } from "./backoff.ts";
import { type Clock, type Random, systemClock, systemRandom, type Timer } from "./clock.ts";
import { isTokenVendError, TokenVendError } from "./errors.ts";
import {
  defaultLifetimePolicy,
  type LifetimePolicy,
  refreshAt,
  tokenState,
  unusableAt,
} from "./lifetime.ts";
import { type Logger, noopLogger } from "./logger.ts";
import {
  grantKey,
  isLive,
  keyId,
  type LiveRecord,
  sessionKey,
  type TokenKey,
  type TokenRecord,
  type TokenSet,
} from "./token.ts";
import type { RefreshClaim, TokenStore } from "./token-store.ts";
import { type UpstreamClient, UpstreamError, type UpstreamTokenResponse } from "./upstream.ts";
import { createWatchHub, type Listener, type WatchHub } from "./watch-hub.ts";

export interface ProviderSettings {
  readonly lifetime: LifetimePolicy;
  readonly backoff: BackoffPolicy;
  /** Scopes asked for on refresh; empty keeps the grant's scopes. */
  readonly refreshScopes?: readonly string[];
}

export interface GrantSettings {
  readonly provider: string;
  readonly scopes: readonly string[];
  readonly audience?: string | undefined;
}

export interface TokenVendorOptions {
  readonly store: TokenStore;
  readonly upstream: UpstreamClient;
  readonly providers: ReadonlyMap<string, ProviderSettings>;
  readonly grants?: ReadonlyMap<string, GrantSettings>;
  readonly clock?: Clock;
  readonly random?: Random;
  readonly logger?: Logger;
  /** Bound on one refresh, from store check to persisted result. */
  readonly refreshTimeoutMs?: number;
  /** Most concurrent WatchToken streams on this replica. */
  readonly maxStreams?: number;
  /** The service's lifetime: shared refreshes and store calls run under it, never under a caller's. */
  readonly signal?: AbortSignal;
  /** This replica's id, written into refresh claims. */
  readonly replicaId?: string;
  /** How long a refresh claim holds before another replica may take it over. */
  readonly claimLeaseMs?: number;
  /** How often a replica waiting on another's claim looks for the new generation. */
  readonly claimPollMs?: number;
  /**
   * How often cached keys are checked against the store, in one batched query,
   * so renewals and revocations by other replicas show here. 0 turns it off
   * (a single process owns its store).
   */
  readonly syncIntervalMs?: number;
  /** A cached key unused this long, with no stream, is dropped at the next sync. */
  readonly idleEvictMs?: number;
  /**
   * Background renewals of one key are at least this far apart, even when a
   * provider's tokens are shorter than the refresh margin (no hot loop).
   */
  readonly minRefreshIntervalMs?: number;
  /**
   * A client-credentials grant used within this long is renewed in the
   * background at its refresh time, so callers keep finding a fresh token; one
   * nobody used for longer is left to go stale (no provider call, no timer).
   */
  readonly grantKeepFreshMs?: number;
  /** Refresh and stream-push spans (only @opentelemetry/api is used); none by default. */
  readonly tracer?: Tracer;
  /** Refresh, cache, stream, watcher and claim metrics; a no-op meter by default. */
  readonly meter?: Meter;
}

export interface Binding {
  readonly expectedSubject?: string | undefined;
  readonly expectedClientId?: string | undefined;
}

export interface StoreTokensInput {
  readonly sessionId: string;
  readonly provider: string;
  readonly tokens: TokenSet;
}

export interface ProviderFailure {
  readonly provider: string;
  readonly code: string;
  readonly message: string;
}

export type WatchReason = "initial" | "refreshed" | "stored";

export interface WatchEvent {
  readonly record: LiveRecord;
  readonly reason: WatchReason;
  /** The span of the work that produced it (a renewal, a store call), when traced. */
  readonly cause?: SpanContext | undefined;
}

/** Receives one stream's events: the current token first, then each newer generation. */
export interface WatchListener {
  next(event: WatchEvent): void;
  /**
   * The end, once: an error (revoked, no longer renewable, shutting down, bad
   * target, too many streams), or undefined when the caller's signal aborted
   * or the stream was cancelled.
   */
  end(error: Error | undefined): void;
}

export type WatchTarget =
  | ({ readonly kind: "session"; readonly sessionId: string; readonly provider: string } & Binding)
  | { readonly kind: "grant"; readonly grant: string };

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

export interface TokenVendor {
  storeUpstreamTokens(input: StoreTokensInput, signal?: AbortSignal): Promise<number>;
  getValidTokens(
    q: { sessionId: string; provider: string; minValidityMs?: number } & Binding,
    signal?: AbortSignal,
  ): Promise<LiveRecord>;
  getAllUpstreamCredentials(
    sessionId: string,
    signal?: AbortSignal,
  ): Promise<{ credentials: Map<string, LiveRecord>; failures: ProviderFailure[] }>;
  getToken(grant: string, minValidityMs?: number, signal?: AbortSignal): Promise<LiveRecord>;
  /**
   * A stream of a key's tokens, by push: the current token, then every newer
   * generation, delivered by calling `listener` from the renewal's fan-out.
   * Returns a cancel.
   */
  watch(target: WatchTarget, listener: WatchListener, signal: AbortSignal): () => void;
  revokeSession(
    q: { sessionId: string; provider?: string | undefined; revokeUpstream: boolean },
    signal?: AbortSignal,
  ): Promise<{ revokedProviders: string[]; upstreamFailures: ProviderFailure[] }>;
  stats(): VendorStats;
  /**
   * Ends every stream with SHUTTING_DOWN, stops background renewals and refuses
   * new streams. Calls in flight go on; abort `signal` to stop them.
   */
  close(): Promise<void>;
}

interface KeyState {
  readonly key: TokenKey;
  readonly id: string;
  readonly provider: string;
  record: LiveRecord | undefined;
  refreshAtMs: number;
  loading: Promise<LiveRecord | undefined> | undefined;
  inflight: Promise<LiveRecord> | undefined;
  /** The span of the inflight refresh, for the callers that wait on it to link to. */
  inflightSpan: SpanContext | undefined;
  /** Consecutive transient failures since the last success. */
  failures: number;
  nextAttemptAt: number;
  lastError: TokenVendError | undefined;
  /** A permanent failure of the current generation's refresh. */
  permanent: TokenVendError | undefined;
  /** A renewed token whose write failed: persisted before anything else. */
  unsaved: LiveRecord | undefined;
  timer: Timer | undefined;
  lastUsedAt: number;
  /** When a new generation was last adopted from a renewal (0: never). */
  renewedAt: number;
}

const maxInsertRetries = 8;
const maxTimerMs = 2 ** 31 - 1;

export function createTokenVendor(opts: TokenVendorOptions): TokenVendor {
  const store = opts.store;
  const upstream = opts.upstream;
  const clock = opts.clock ?? systemClock;
  const random = opts.random ?? systemRandom;
  const log = opts.logger ?? noopLogger;
  const grants = opts.grants ?? new Map<string, GrantSettings>();
  const refreshTimeoutMs = opts.refreshTimeoutMs ?? 30_000;
  const maxStreams = opts.maxStreams ?? 10_000;
  const serviceSignal = opts.signal ?? new AbortController().signal;
  const replicaId = opts.replicaId ?? `replica-${Math.floor(random() * 2 ** 48).toString(36)}`;
  const claimLeaseMs = opts.claimLeaseMs ?? refreshTimeoutMs;
  const claimPollMs = opts.claimPollMs ?? 50;
  const syncIntervalMs = opts.syncIntervalMs ?? 0;
  const idleEvictMs = opts.idleEvictMs ?? 600_000;
  const minRefreshIntervalMs = opts.minRefreshIntervalMs ?? 5_000;
  const grantKeepFreshMs = opts.grantKeepFreshMs ?? 600_000;
  let closing = false;
  let claimWaits = 0;
  let claimTakeovers = 0;
  let syncs = 0;
  let syncTimer: Timer | undefined;
  let lastEvictAt = clock.now();
  const states = new Map<string, KeyState>();
  let streams = 0;
  // --- telemetry: no-op unless a tracer / meter is given ---
  const tracer = opts.tracer;
  const metrics = createVendorMetrics(opts.meter ?? noopMeter);
  const observeStreams = (r: ObservableResult) => r.observe(streams);
  const observeWatchers = (r: ObservableResult) => r.observe(hub.idCount());
  metrics.streams.addCallback(observeStreams);
  metrics.watchers.addCallback(observeWatchers);
  // Per provider: its attribute sets, and the cache lookups counted here (a
  // plain increment on the hot path) and reported when metrics are collected.
  const providerAttrs = new Map<
    string,
    { hit: Attributes; miss: Attributes; p: Attributes; hits: number; misses: number }
  >();
  const attrsOf = (provider: string) => {
    let a = providerAttrs.get(provider);
    if (a === undefined) {
      a = {
        hit: { [attr.provider]: provider, [attr.cacheResult]: "hit" },
        miss: { [attr.provider]: provider, [attr.cacheResult]: "miss" },
        p: { [attr.provider]: provider },
        hits: 0,
        misses: 0,
      };
      providerAttrs.set(provider, a);
    }
    return a;
  };
  const lookup = (provider: string, hit: boolean) => {
    const a = attrsOf(provider);
    if (hit) a.hits++;
    else a.misses++;
  };
  const observeLookups = (r: ObservableResult) => {
    for (const a of providerAttrs.values()) {
      r.observe(a.hits, a.hit);
      r.observe(a.misses, a.miss);
    }
  };
  metrics.cacheLookups.addCallback(observeLookups);
  /** The span active in the caller (its server span), when tracing. */
  const activeSpan = (): Span | undefined =>
    tracer !== undefined ? trace.getActiveSpan() : undefined;

  const hub: WatchHub<WatchEvent> = createWatchHub<WatchEvent>({
    onFirst: (id) => {
      const st = states.get(id);
      if (st !== undefined) schedule(st);
    },
    onLast: (id) => {
      const st = states.get(id);
      st?.timer?.cancel();
      if (st !== undefined) st.timer = undefined;
    },
  });

  const providerOf = (name: string): ProviderSettings => {
    const p = opts.providers.get(name);
    if (p === undefined) {
      throw new TokenVendError("PROVIDER_NOT_FOUND", `provider "${name}" is not configured`, {
        fieldViolations: [{ field: "provider", description: `unknown provider "${name}"` }],
      });
    }
    return p;
  };

  const grantOf = (name: string): GrantSettings => {
    const g = grants.get(name);
    if (g === undefined) {
      throw new TokenVendError("GRANT_NOT_FOUND", `grant "${name}" is not configured`, {
        fieldViolations: [{ field: "grant", description: `unknown grant "${name}"` }],
      });
    }
    return g;
  };

  /** Drops keys unused for idleEvictMs that nothing watches or waits on. */
  const evictIdle = () => {
    const now = clock.now();
    lastEvictAt = now;
    for (const st of [...states.values()]) {
      const idle = now - st.lastUsedAt > idleEvictMs;
      if (idle && !hub.has(st.id) && st.inflight === undefined && st.unsaved === undefined) {
        st.timer?.cancel();
        states.delete(st.id);
      }
    }
  };

  const stateOf = (key: TokenKey, provider: string): KeyState => {
    const id = keyId(key);
    let st = states.get(id);
    if (st === undefined) {
      // Without the sync loop, eviction runs as new keys arrive: no timer needed.
      if (clock.now() - lastEvictAt > Math.min(idleEvictMs, 60_000)) evictIdle();
      st = {
        key,
        id,
        provider,
        record: undefined,
        refreshAtMs: 0,
        loading: undefined,
        inflight: undefined,
        inflightSpan: undefined,
        failures: 0,
        nextAttemptAt: 0,
        lastError: undefined,
        permanent: undefined,
        unsaved: undefined,
        timer: undefined,
        lastUsedAt: clock.now(),
        renewedAt: 0,
      };
      states.set(id, st);
    }
    return st;
  };

  const notFound = (key: TokenKey): TokenVendError =>
    key.kind === "session"
      ? new TokenVendError(
          "SESSION_NOT_FOUND",
          `no tokens for this session at provider "${key.provider}"`,
        )
      : new TokenVendError("GRANT_NOT_FOUND", `grant "${key.grant}" has no token`);

  /** A state dropped by forget() or eviction must not be revived by work that finishes later. */
  const alive = (st: KeyState): boolean => states.get(st.id) === st;

  /** Makes `record` the cached generation if it is newer; returns whether it was. */
  const adopt = (st: KeyState, record: LiveRecord, reason: WatchReason | undefined): boolean => {
    if (!alive(st)) return false;
    if (st.record !== undefined && st.record.generation >= record.generation) return false;
    if (reason !== undefined) st.renewedAt = clock.now();
    st.record = record;
    st.refreshAtMs = refreshAt(record.tokens, providerOf(st.provider).lifetime, random);
    st.failures = 0;
    st.nextAttemptAt = 0;
    st.lastError = undefined;
    st.permanent = undefined;
    if (reason !== undefined) {
      hub.publish(st.id, { record, reason, cause: activeSpan()?.spanContext() });
    }
    schedule(st);
    return true;
  };

  /** Drops a key that was revoked or deleted, ending its streams with NOT_FOUND. */
  const forget = (st: KeyState) => {
    if (!alive(st)) return;
    st.timer?.cancel();
    states.delete(st.id);
    hub.end(st.id, notFound(st.key));
  };

  const load = (st: KeyState, signal: AbortSignal | undefined): Promise<LiveRecord | undefined> => {
    if (st.record !== undefined) return Promise.resolve(st.record);
    st.loading ??= store
      .getActive(st.key, { signal: serviceSignal })
      .then((r) => {
        if (isLive(r)) adopt(st, r, undefined);
        return st.record;
      })
      .catch((err: unknown) => {
        throw storeError(err);
      })
      .finally(() => {
        st.loading = undefined;
      });
    return abandonWait(st.loading, signal);
  };

  const storeError = (err: unknown): TokenVendError =>
    isTokenVendError(err)
      ? err
      : new TokenVendError("STORE_UNAVAILABLE", "the token store is unavailable", { cause: err });

  /** Writes `record` as its generation; on conflict returns the winner. */
  const persist = async (st: KeyState, record: LiveRecord): Promise<TokenRecord> => {
    const res = await store.insert(record, { signal: serviceSignal });
    if (!res.inserted) return res.winner;
    // A newer generation (a revocation and a new login while this refresh ran)
    // may sit above the one just written: the active one is the answer.
    const active = await store.getActive(st.key, { signal: serviceSignal });
    if (active !== undefined && active.generation > record.generation) return active;
    void store.pruneBelow(st.key, record.generation, { signal: serviceSignal }).catch(() => {});
    return record;
  };

  const refresh = (st: KeyState, trigger: RefreshTrigger = "caller"): Promise<LiveRecord> => {
    if (st.inflight !== undefined) return st.inflight;
    if (st.permanent !== undefined) return Promise.reject(st.permanent);
    if (st.lastError !== undefined && clock.now() < st.nextAttemptAt) {
      return Promise.reject(st.lastError);
    }
    const run = measuredRefresh(st, trigger);
    st.inflight = run;
    const clear = () => {
      if (st.inflight === run) {
        st.inflight = undefined;
        st.inflightSpan = undefined;
      }
    };
    run.then(clear, clear);
    return run;
  };

  /**
   * doRefresh, counted and timed by provider, grant type, outcome and source,
   * and, when tracing, in a `tokenvend.refresh` span: a child of the waiting
   * caller's span, or a trace of its own for a background renewal (and for a
   * stale-while-revalidate refresh, linked from the call that started it).
   */
  const measuredRefresh = (st: KeyState, trigger: RefreshTrigger): Promise<LiveRecord> => {
    const info: RefreshInfo = { source: "provider" };
    const grantType = st.key.kind === "grant" ? "client_credentials" : "refresh_token";
    const startedAt = clock.now();
    const done = (outcome: RefreshOutcome) => {
      const a: Attributes = {
        [attr.provider]: st.provider,
        [attr.grantType]: grantType,
        [attr.outcome]: outcome,
        ...(outcome === "success" ? { [attr.source]: info.source } : {}),
      };
      metrics.refreshes.add(1, a);
      metrics.refreshDuration.record(Math.max(0, clock.now() - startedAt) / 1000, a);
    };
    const run =
      tracer === undefined
        ? doRefresh(st, info)
        : instrument(
            tracer,
            "tokenvend.refresh",
            {
              kind: SpanKind.INTERNAL,
              attributes: {
                [attr.provider]: st.provider,
                [attr.grantType]: grantType,
                [attr.attempt]: st.failures + 1,
                [attr.trigger]: trigger,
                ...(st.key.kind === "grant" ? { [attr.grant]: st.key.grant } : {}),
              },
              ...(trigger === "caller" ? {} : { root: true }),
              ...(trigger === "revalidate" && activeSpan() !== undefined
                ? { links: [{ context: activeSpan()!.spanContext() }] }
                : {}),
              describeError: describeRefreshError,
            },
            async (span) => {
              st.inflightSpan = span.spanContext();
              const r = await doRefresh(st, info);
              span.setAttributes({
                [attr.outcome]: "success",
                [attr.source]: info.source,
                [attr.generation]: r.generation,
              });
              return r;
            },
          );
    return run.then(
      (r) => {
        done("success");
        return r;
      },
      (err: unknown) => {
        done(refreshOutcomeOf(err));
        throw err;
      },
    );
  };

  /**
   * Looks in the store before any provider call: a usable generation newer than
   * the cached one (renewed by another replica) is adopted and ends the refresh.
   */
  /**
   * The key's active generation in the store: taken (`done`) when it is newer
   * than `after` and still usable, else returned as the one to refresh from.
   */
  const readNewer = async (
    st: KeyState,
    prov: ProviderSettings,
    signal: AbortSignal,
    after: number,
  ): Promise<
    { done: true; record: LiveRecord } | { done: false; current: LiveRecord | undefined }
  > => {
    const stored = await store.getActive(st.key, { signal }).catch((err: unknown) => {
      throw storeError(err);
    });
    if (stored !== undefined && !isLive(stored)) {
      forget(st);
      throw notFound(st.key);
    }
    if (
      stored !== undefined &&
      stored.generation > after &&
      clock.now() < unusableAt(stored.tokens, prov.lifetime)
    ) {
      adopt(st, stored, stored.reason === "stored" ? "stored" : "refreshed");
      return { done: true, record: stored };
    }
    const current = stored ?? st.record;
    if (st.key.kind === "session" && current === undefined) throw notFound(st.key);
    return { done: false, current };
  };

  /**
   * One refresh of a key for the whole cluster: claim (key, generation) before
   * redeeming its refresh token; a replica that loses the claim waits for the
   * winner's generation; a dead claim is taken over by the one replica whose
   * deleteOne removed it.
   */
  const doRefresh = async (st: KeyState, info: RefreshInfo): Promise<LiveRecord> => {
    // The generation this refresh replaces. Any newer one that is usable, made
    // elsewhere and seen here through the store or the sync while this refresh
    // ran, is the answer: redeeming its refresh token would renew twice.
    const from = st.record?.generation ?? 0;
    const signal = AbortSignal.any([serviceSignal, AbortSignal.timeout(refreshTimeoutMs)]);
    const prov = providerOf(st.provider);
    try {
      if (st.unsaved !== undefined) return await saveUnsaved(st);
      let waited = false;
      for (;;) {
        const seen = await readNewer(st, prov, signal, from);
        if (seen.done) {
          info.source = "store";
          return seen.record;
        }
        const claim: RefreshClaim = {
          key: st.key,
          generation: seen.current?.generation ?? 0,
          owner: replicaId,
          leaseUntil: clock.now() + claimLeaseMs,
        };
        const got = await store.claim(claim, { signal }).catch((err: unknown) => {
          throw storeError(err);
        });
        if (!got.acquired) {
          if (got.holder.leaseUntil <= clock.now()) {
            const mine = await store.releaseClaim(got.holder, { signal }).catch((err: unknown) => {
              throw storeError(err);
            });
            if (mine) {
              claimTakeovers++;
              metrics.claimTakeovers.add(1, attrsOf(st.provider).p);
              activeSpan()?.addEvent("claim.takeover");
              log.warn(
                { provider: st.provider, deadOwner: got.holder.owner },
                "took over a dead refresh claim",
              );
              continue;
            }
          }
          if (!waited) {
            claimWaits++;
            metrics.claimWaits.add(1, attrsOf(st.provider).p);
            activeSpan()?.addEvent("claim.wait");
          }
          waited = true;
          await clock.sleep(claimPollMs, signal);
          continue;
        }
        let keepClaim = false;
        try {
          // The previous holder persists before it releases: look once more.
          const again = await readNewer(st, prov, signal, from);
          if (again.done) {
            info.source = "store";
            return again.record;
          }
          const current = again.current;
          // The store moved on since the claim (an unusable newer generation):
          // claim the one that would be redeemed instead (this one is released).
          if ((current?.generation ?? 0) !== claim.generation) continue;
          const startedAt = clock.now();
          const res = await callUpstream(st, current, signal);
          st.unsaved = {
            key: st.key,
            generation: (current?.generation ?? 0) + 1,
            reason: st.key.kind === "grant" ? "granted" : "refreshed",
            tokens: renewedTokens(current?.tokens, res, startedAt, prov.lifetime),
          };
          try {
            return await saveUnsaved(st);
          } catch (err) {
            // The old refresh token is spent: nobody else may redeem it while ours is unsaved.
            keepClaim = st.unsaved !== undefined;
            throw err;
          }
        } finally {
          if (!keepClaim) void store.releaseClaim(claim).catch(() => {});
        }
      }
    } catch (err) {
      throw classify(st, err, prov);
    }
  };

  /** Persists the pending renewal; a write error keeps it pending (rotated refresh tokens are never dropped). */
  const saveUnsaved = async (st: KeyState): Promise<LiveRecord> => {
    const record = st.unsaved!;
    let winner: TokenRecord;
    try {
      winner = await persist(st, record);
    } catch (err) {
      throw storeError(err);
    }
    st.unsaved = undefined;
    if (!isLive(winner)) {
      forget(st);
      throw notFound(st.key);
    }
    adopt(st, winner, "refreshed");
    return alive(st) && st.record !== undefined ? st.record : winner;
  };

  const callUpstream = (
    st: KeyState,
    current: LiveRecord | undefined,
    signal: AbortSignal,
  ): Promise<UpstreamTokenResponse> => {
    const key = st.key;
    if (key.kind === "grant") {
      const g = grantOf(key.grant);
      return upstream.clientCredentials(g.provider, {
        signal,
        scopes: g.scopes,
        ...(g.audience !== undefined ? { audience: g.audience } : {}),
      });
    }
    const refreshToken = current?.tokens.refreshToken;
    if (refreshToken === undefined) {
      throw new TokenVendError(
        "NO_REFRESH_TOKEN",
        `the token at provider "${key.provider}" expired and there is no refresh token`,
      );
    }
    const scopes = providerOf(st.provider).refreshScopes;
    return upstream.refresh(key.provider, {
      signal,
      refreshToken,
      ...(scopes !== undefined && scopes.length > 0 ? { scopes } : {}),
    });
  };

  /** Turns a refresh failure into the domain error and updates the key's backoff state. */
  const classify = (st: KeyState, err: unknown, prov: ProviderSettings): TokenVendError => {
    if (isTokenVendError(err)) {
      if (err.code === "NO_REFRESH_TOKEN") st.permanent = err;
      if (err.code === "STORE_UNAVAILABLE") backoff(st, prov, err, undefined);
      return err;
    }
    if (err instanceof UpstreamError && err.permanent) {
      const e = new TokenVendError(
        "REFRESH_FAILED",
        `provider "${st.provider}" rejected the refresh (${err.oauthError ?? "error"})`,
        { cause: err },
      );
      st.permanent = e;
      log.warn({ provider: st.provider, oauthError: err.oauthError }, "refresh rejected");
      return e;
    }
    const e = new TokenVendError(
      "UPSTREAM_UNAVAILABLE",
      serviceSignal.aborted
        ? "the service is shutting down"
        : `provider "${st.provider}" is unavailable`,
      { cause: err },
    );
    backoff(st, prov, e, err instanceof UpstreamError ? err.retryAfterMs : undefined);
    log.warn(
      {
        provider: st.provider,
        attempt: st.failures,
        retryInMs: st.nextAttemptAt - clock.now(),
        status: err instanceof UpstreamError ? err.status : undefined,
        err: err instanceof Error ? err.message : String(err),
      },
      "refresh failed, backing off",
    );
    return e;
  };

  const backoff = (
    st: KeyState,
    prov: ProviderSettings,
    e: TokenVendError,
    retryAfterMs: number | undefined,
  ) => {
    st.failures++;
    st.lastError = e;
    st.nextAttemptAt =
      clock.now() + backoffDelayMs(st.failures, prov.backoff, random, retryAfterMs);
    schedule(st);
  };

  /** Arms the background renewal of a watched key at its jittered refresh time or next backoff step. */
  const schedule = (st: KeyState) => {
    st.timer?.cancel();
    st.timer = undefined;
    if (closing || serviceSignal.aborted || st.permanent !== undefined || !alive(st)) return;
    // A renewal that could not be stored is retried whoever watches: it holds the only live refresh token.
    if (!hub.has(st.id) && st.unsaved === undefined && !keptFresh(st)) return;
    if (st.record === undefined && st.failures === 0) return;
    const at =
      st.failures > 0
        ? st.nextAttemptAt
        : Math.max(st.refreshAtMs, st.renewedAt + minRefreshIntervalMs);
    const delay = at - clock.now();
    // setTimeout holds at most ~24.8 days; longer waits are re-armed.
    if (delay > maxTimerMs) {
      st.timer = clock.setTimer(maxTimerMs, () => schedule(st));
      return;
    }
    st.timer = clock.setTimer(delay, () => {
      st.timer = undefined;
      // Nobody needs it any more: no renewal, and nothing armed.
      if (!hub.has(st.id) && st.unsaved === undefined && !keptFresh(st)) return;
      refresh(st, "background").then(
        () => schedule(st),
        (err: unknown) => {
          if (
            isTokenVendError(err, "REFRESH_FAILED") ||
            isTokenVendError(err, "NO_REFRESH_TOKEN")
          ) {
            hub.end(st.id, err);
          } else if (!isTokenVendError(err, "SESSION_NOT_FOUND")) {
            schedule(st);
          }
        },
      );
    });
  };

  /** A grant somebody used recently: renewed ahead of its callers. */
  const keptFresh = (st: KeyState): boolean =>
    st.key.kind === "grant" && clock.now() - st.lastUsedAt < grantKeepFreshMs;

  const bindingError = (r: LiveRecord, b: Binding): TokenVendError | undefined => {
    const mismatch =
      (b.expectedSubject && b.expectedSubject !== r.tokens.subject) ||
      (b.expectedClientId && b.expectedClientId !== r.tokens.clientId);
    return mismatch
      ? new TokenVendError(
          "INVALID_BINDING",
          "the stored token is bound to a different subject or client",
        )
      : undefined;
  };

  /** The valid token of a key: cached, stale-while-revalidate, or refreshed and waited for. */
  const valid = async (
    st: KeyState,
    minValidityMs: number,
    binding: Binding,
    signal: AbortSignal | undefined,
  ): Promise<LiveRecord> => {
    st.lastUsedAt = clock.now();
    const cached = st.record !== undefined;
    const record = st.record ?? (await load(st, signal));
    if (record === undefined && st.key.kind === "session") {
      lookup(st.provider, false);
      // Caller-chosen ids that match nothing are not kept.
      if (st.inflight === undefined && st.unsaved === undefined && !hub.has(st.id)) {
        states.delete(st.id);
      }
      throw notFound(st.key);
    }
    if (record !== undefined) {
      const be = bindingError(record, binding);
      if (be !== undefined) throw be;
      const lifetime = providerOf(st.provider).lifetime;
      const now = clock.now();
      const state = tokenState(record.tokens, lifetime, st.refreshAtMs, now, minValidityMs);
      if (state !== "expired") {
        if (state === "stale" && now >= st.renewedAt + minRefreshIntervalMs) {
          void refresh(st, "revalidate").catch(() => {});
        }
        // A grant in use again after a quiet spell gets its background renewal back.
        if (st.key.kind === "grant" && st.timer === undefined) schedule(st);
        lookup(st.provider, cached);
        return record;
      }
    }
    lookup(st.provider, false);
    const joined = st.inflight !== undefined;
    const pending = refresh(st);
    // The caller's span links to the refresh it waits on, shared or its own.
    if (st.inflightSpan !== undefined) {
      activeSpan()?.addLink({ context: st.inflightSpan, attributes: { [attr.shared]: joined } });
    }
    const renewed = await abandonWait(pending, signal);
    // A renewal that cannot meet minValidityMs is still served while it is valid at all.
    if (clock.now() >= unusableAt(renewed.tokens, providerOf(st.provider).lifetime)) {
      throw new TokenVendError(
        "UPSTREAM_UNAVAILABLE",
        `provider "${st.provider}" issued a token that is already expired`,
      );
    }
    return renewed;
  };

  const sessionState = (sessionId: string, provider: string): KeyState => {
    providerOf(provider);
    return stateOf(sessionKey(sessionId, provider), provider);
  };

  const grantState = (grant: string): KeyState => {
    const g = grantOf(grant);
    return stateOf(grantKey(grant), g.provider);
  };

  /** Inserts the next generation after whatever is active, retrying on lost races. */
  const insertNext = async <R extends TokenRecord>(
    key: TokenKey,
    make: (generation: number) => R,
    signal: AbortSignal | undefined,
  ): Promise<{ record: R; previous: TokenRecord | undefined }> => {
    for (let i = 0; i < maxInsertRetries; i++) {
      const previous = await store.getActive(key, { signal });
      const record = make((previous?.generation ?? 0) + 1);
      const res = await store.insert(record, { signal });
      if (res.inserted) {
        void store.pruneBelow(key, record.generation).catch(() => {});
        return { record, previous };
      }
    }
    throw new TokenVendError("STORE_UNAVAILABLE", "too many concurrent writers for one key");
  };

  /**
   * One batched query for the generations of every cached key; keys whose
   * generation moved elsewhere are re-read, adopted and pushed to streams, or
   * forgotten (ending streams with NOT_FOUND) when revoked.
   */
  const sync = async () => {
    evictIdle();
    const list = [...states.values()];
    if (list.length === 0) return;
    const gens = await store.activeGenerations(
      list.map((st) => st.key),
      { signal: serviceSignal },
    );
    syncs++;
    for (const st of list) {
      const theirs = gens.get(st.id);
      const mine = st.record?.generation;
      if (theirs === mine || theirs === undefined || (mine !== undefined && theirs < mine))
        continue;
      const r = await store.getActive(st.key, { signal: serviceSignal });
      if (r !== undefined && !isLive(r)) forget(st);
      else if (r !== undefined) adopt(st, r, r.reason === "stored" ? "stored" : "refreshed");
    }
  };

  const armSync = () => {
    if (syncIntervalMs <= 0 || closing || serviceSignal.aborted) return;
    syncTimer = clock.setTimer(syncIntervalMs, () => {
      sync()
        .catch((err: unknown) =>
          log.warn(
            { err: err instanceof Error ? err.message : String(err) },
            "generation sync failed",
          ),
        )
        .finally(armSync);
    });
  };
  armSync();

  const vendor: TokenVendor = {
    async storeUpstreamTokens(input, signal) {
      const st = sessionState(input.sessionId, input.provider);
      const key = st.key;
      const make = (generation: number): LiveRecord => ({
        key,
        generation,
        reason: "stored",
        tokens: input.tokens,
      });
      const { record } = await insertNext(key, make, signal).catch((err: unknown) => {
        throw storeError(err);
      });
      adopt(st, record, "stored");
      return record.generation;
    },

    async getValidTokens(q, signal) {
      const st = sessionState(q.sessionId, q.provider);
      return valid(st, q.minValidityMs ?? 0, q, signal);
    },

    async getAllUpstreamCredentials(sessionId, signal) {
      const records = await store.getSession(sessionId, { signal }).catch((err: unknown) => {
        throw storeError(err);
      });
      const credentials = new Map<string, LiveRecord>();
      const failures: ProviderFailure[] = [];
      await Promise.all(
        records.map(async (r) => {
          if (!isLive(r) || r.key.kind !== "session" || !opts.providers.has(r.key.provider)) return;
          const provider = r.key.provider;
          const st = stateOf(r.key, provider);
          adopt(st, r, "refreshed");
          try {
            credentials.set(provider, await valid(st, 0, {}, signal));
          } catch (err) {
            const e = isTokenVendError(err) ? err : storeError(err);
            failures.push({ provider, code: e.code, message: e.message });
          }
        }),
      );
      failures.sort((a, b) => a.provider.localeCompare(b.provider));
      return { credentials, failures };
    },

    async getToken(grant, minValidityMs, signal) {
      return valid(grantState(grant), minValidityMs ?? 0, {}, signal);
    },

    watch(target, listener, signal) {
      let st: KeyState;
      try {
        st =
          target.kind === "session"
            ? sessionState(target.sessionId, target.provider)
            : grantState(target.grant);
      } catch (err) {
        listener.end(err as Error);
        return noop;
      }
      if (closing || serviceSignal.aborted) {
        listener.end(shuttingDown());
        return noop;
      }
      if (streams >= maxStreams) {
        listener.end(
          new TokenVendError(
            "RESOURCE_EXHAUSTED",
            `this replica serves at most ${maxStreams} streams`,
          ),
        );
        return noop;
      }
      if (signal.aborted) {
        listener.end(undefined);
        return noop;
      }
      streams++;
      const stream = new StreamWatch(listener, signal, st.provider, tracer, () => streams--);
      // Listen before reading, so a renewal in between is not missed.
      stream.off = hub.listen(st.id, stream);
      const binding = target.kind === "session" ? target : {};
      valid(st, 0, binding, signal).then(
        (first) => {
          if (stream.done) return;
          if (st.timer === undefined) schedule(st);
          stream.start(first);
        },
        (err: unknown) => stream.finish(err as Error),
      );
      return () => stream.finish(undefined);
    },

    async revokeSession(q, signal) {
      if (q.provider !== undefined) providerOf(q.provider);
      const records = await (q.provider !== undefined
        ? store
            .getActive(sessionKey(q.sessionId, q.provider), { signal })
            .then((r) => (r ? [r] : []))
        : store.getSession(q.sessionId, { signal })
      ).catch((err: unknown) => {
        throw storeError(err);
      });
      const revokedProviders: string[] = [];
      const upstreamFailures: ProviderFailure[] = [];
      for (const found of records) {
        if (!isLive(found) || found.key.kind !== "session") continue;
        const key = found.key;
        const { previous } = await insertNext(
          key,
          (generation) => ({ key, generation, reason: "revoked" }),
          signal,
        ).catch((err: unknown) => {
          throw storeError(err);
        });
        const st = states.get(keyId(key));
        if (st !== undefined) forget(st);
        else hub.end(keyId(key), notFound(key));
        if (!isLive(previous)) continue;
        revokedProviders.push(key.provider);
        if (q.revokeUpstream && opts.providers.has(key.provider)) {
          const t = previous.tokens;
          try {
            await upstream.revoke(key.provider, {
              signal: AbortSignal.any([serviceSignal, AbortSignal.timeout(refreshTimeoutMs)]),
              token: t.refreshToken ?? t.accessToken,
              tokenTypeHint: t.refreshToken !== undefined ? "refresh_token" : "access_token",
            });
          } catch (err) {
            upstreamFailures.push({
              provider: key.provider,
              code: "UPSTREAM_UNAVAILABLE",
              message: `revocation at provider "${key.provider}" failed`,
            });
            log.warn(
              { provider: key.provider, err: err instanceof Error ? err.message : String(err) },
              "upstream revocation failed",
            );
          }
        }
      }
      revokedProviders.sort();
      return { revokedProviders, upstreamFailures };
    },

    stats() {
      let timers = 0;
      let inflight = 0;
      for (const st of states.values()) {
        if (st.timer !== undefined) timers++;
        if (st.inflight !== undefined) inflight++;
      }
      return {
        cachedKeys: states.size,
        claimWaits,
        claimTakeovers,
        syncs,
        inflightRefreshes: inflight,
        watchers: hub.idCount(),
        timers,
        streams,
      };
    },

    async close() {
      closing = true;
      syncTimer?.cancel();
      metrics.streams.removeCallback(observeStreams);
      metrics.watchers.removeCallback(observeWatchers);
      metrics.cacheLookups.removeCallback(observeLookups);
      for (const st of states.values()) {
        st.timer?.cancel();
        st.timer = undefined;
      }
      hub.endAll(shuttingDown());
    },
  };
  return vendor;
}

// --- telemetry helpers (only @opentelemetry/api) ---

/** Where a refresh got its token; doRefresh sets it. */
interface RefreshInfo {
  source: RefreshSource;
}

function refreshOutcomeOf(err: unknown): RefreshOutcome {
  if (!isTokenVendError(err)) return "error";
  switch (err.code) {
    case "REFRESH_FAILED":
      return "rejected";
    case "NO_REFRESH_TOKEN":
      return "no_refresh_token";
    case "UPSTREAM_UNAVAILABLE":
      return "unavailable";
    case "STORE_UNAVAILABLE":
      return "store_unavailable";
    case "SESSION_NOT_FOUND":
    case "GRANT_NOT_FOUND":
      return "not_found";
    default:
      return "error";
  }
}

/**
 * A failed refresh is an error on its span, with the domain code and message
 * (factual, free of secrets) and the provider's OAuth error code; a token that
 * was revoked meanwhile (not found) is an outcome, not a fault.
 */
const describeRefreshError: DescribeError = (err) => {
  const outcome = refreshOutcomeOf(err);
  const cause = isTokenVendError(err) ? err.cause : undefined;
  const oauthError = cause instanceof UpstreamError ? cause.oauthError : undefined;
  return {
    type: isTokenVendError(err) ? err.code : "INTERNAL",
    message: isTokenVendError(err) ? err.message : undefined,
    expected: outcome === "not_found",
    attributes: {
      [attr.outcome]: outcome,
      ...(oauthError !== undefined ? { [attr.oauthError]: oauthError } : {}),
    },
  };
};

const noop = () => {};

/**
 * One stream of a key: a hub listener that holds renewals back until the
 * stream's first message went out, drops generations the stream already has,
 * and releases its slot once, whichever way it ends.
 */
class StreamWatch implements Listener<WatchEvent> {
  done = false;
  off: (() => void) | undefined;
  #started = false;
  #last = 0;
  #early: WatchEvent | undefined;
  /** An end that came before the first message: that message goes out first. */
  #endAfterStart: Error | undefined;
  readonly #listener: WatchListener;
  readonly #signal: AbortSignal;
  readonly #provider: string;
  readonly #tracer: Tracer | undefined;
  /** The stream's own context (its server span), the parent of its push spans. */
  readonly #context: Context | undefined;
  readonly #release: () => void;

  constructor(
    listener: WatchListener,
    signal: AbortSignal,
    provider: string,
    tracer: Tracer | undefined,
    release: () => void,
  ) {
    this.#listener = listener;
    this.#signal = signal;
    this.#provider = provider;
    this.#tracer = tracer;
    this.#context = tracer !== undefined ? context.active() : undefined;
    this.#release = release;
    signal.addEventListener("abort", this);
  }

  /** The first message: the current token. */
  start(first: LiveRecord): void {
    this.#started = true;
    this.#last = first.generation;
    this.#listener.next({ record: first, reason: "initial" });
    const early = this.#early;
    this.#early = undefined;
    if (early !== undefined) this.next(early);
    if (this.#endAfterStart !== undefined) this.finish(this.#endAfterStart);
  }

  next(ev: WatchEvent): void {
    if (this.done) return;
    if (!this.#started) {
      this.#early = ev;
      return;
    }
    if (ev.record.generation <= this.#last) return;
    this.#last = ev.record.generation;
    if (this.#tracer !== undefined) this.#tracePush(this.#tracer, ev);
    this.#listener.next(ev);
  }

  end(reason: Error): void {
    if (this.#started) this.finish(reason);
    else this.#endAfterStart ??= reason;
  }

  /** The caller's signal aborted. */
  handleEvent(): void {
    this.finish(undefined);
  }

  finish(error: Error | undefined): void {
    if (this.done) return;
    this.done = true;
    this.#signal.removeEventListener("abort", this);
    this.off?.();
    this.#release();
    this.#listener.end(error);
  }

  /** A span in the stream's context, linked to the renewal that caused the push. */
  #tracePush(tracer: Tracer, ev: WatchEvent): void {
    tracer
      .startSpan(
        "tokenvend.push",
        {
          kind: SpanKind.INTERNAL,
          attributes: {
            [attr.provider]: this.#provider,
            [attr.generation]: ev.record.generation,
            [attr.watchReason]: ev.reason,
          },
          ...(ev.cause !== undefined ? { links: [{ context: ev.cause }] } : {}),
        },
        this.#context,
      )
      .end();
  }
}

function shuttingDown(): TokenVendError {
  return new TokenVendError("SHUTTING_DOWN", "this replica is shutting down; reconnect to another");
}

/** The token set after a renewal: omitted refresh and id tokens are carried forward. */
export function renewedTokens(
  previous: TokenSet | undefined,
  res: UpstreamTokenResponse,
  issuedAt: number,
  lifetime: LifetimePolicy = defaultLifetimePolicy,
): TokenSet {
  const lifetimeMs =
    res.expiresInSec !== undefined ? res.expiresInSec * 1000 : lifetime.defaultLifetimeMs;
  return {
    accessToken: res.accessToken,
    refreshToken: res.refreshToken ?? previous?.refreshToken,
    idToken: res.idToken ?? previous?.idToken,
    tokenType: res.tokenType || "Bearer",
    scopes: res.scopes ?? previous?.scopes ?? [],
    issuedAt,
    expiresAt: issuedAt + lifetimeMs,
    subject: previous?.subject,
    clientId: previous?.clientId,
  };
}

export { defaultBackoffPolicy, defaultLifetimePolicy };
