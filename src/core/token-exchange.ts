// Tokens narrowed to one audience (RFC 8693), cached and renewed per (subject key, audience,
// scopes, requested token type) like any other token, from the same parts as the vendor: the
// key cache, the single-flight refresher with backoff, the renewal scheduler, the watch hub and
// streams, the lifetime policy of the subject's provider. A renewal is a new exchange with the
// subject's current access token (served, and refreshed when due, by the vendor).
//
// Held in this replica's memory only, never in the store: an exchanged token comes with no
// refresh token to redeem once per cluster (the subject token can be exchanged again), so each
// replica exchanges for itself and no more token material sits at rest. A stream of an
// exchanged token follows its subject: when the subject is revoked or can no longer be renewed,
// the stream ends the same way.

import type { Meter, Tracer } from "@opentelemetry/api";
import { createVendorMetrics, noopMeter } from "../telemetry/metrics.ts";
import { abandonWait } from "./abandon-wait.ts";
import type { Catalog } from "./catalog.ts";
import type { Clock, Random } from "./clock.ts";
import { renewedTokens } from "./cluster-refresh.ts";
import { isTokenVendError, shuttingDownError, TokenVendError } from "./errors.ts";
import { flowError } from "./flow-common.ts";
import { type FlowProviders, flowProvider } from "./flow-settings.ts";
import { accessTokenType, type FlowUpstream } from "./flow-upstream.ts";
import { createForcedRefreshes, type ForcedRefreshPolicy } from "./forced-refresh.ts";
import { cacheInstruments, observeGauges } from "./gauges.ts";
import { createKeyCache, type KeyEntry } from "./key-cache.ts";
import { refreshAt, tokenState, unusableAt } from "./lifetime.ts";
import type { Logger } from "./logger.ts";
import { createRefreshTelemetry } from "./refresh-telemetry.ts";
import { createRefresher } from "./refresher.ts";
import { createRenewalScheduler } from "./renewal-scheduler.ts";
import { grantKey, keyId, type LiveRecord, sessionKey } from "./token.ts";
import { type Binding, createStreams, type WatchEvent, type WatchTarget } from "./token-stream.ts";
import { UpstreamError } from "./upstream.ts";
import { createWatchHub, type Listener } from "./watch-hub.ts";

export interface ExchangeTargetInput {
  readonly subject: WatchTarget;
  readonly audience: string;
  readonly scopes: readonly string[];
  readonly requestedTokenType?: string | undefined;
}

export interface ExchangedRecord {
  readonly record: LiveRecord;
  readonly issuedTokenType: string;
}

/** What the exchanges need of the vendor: the subject's token, and a stream of it. */
export interface SubjectSource {
  getValidTokens(
    q: { sessionId: string; provider: string } & Binding,
    signal?: AbortSignal,
  ): Promise<LiveRecord>;
  getToken(grant: string, minValidityMs?: number, signal?: AbortSignal): Promise<LiveRecord>;
  watch(target: WatchTarget, listener: Listener<WatchEvent>, signal: AbortSignal): () => void;
}

export interface TokenExchangesOptions {
  readonly source: SubjectSource;
  readonly upstream: FlowUpstream;
  readonly catalog: Catalog;
  readonly providers: FlowProviders;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  readonly refreshTimeoutMs: number;
  readonly idleEvictMs: number;
  readonly minRefreshIntervalMs: number;
  readonly maxStreams: number;
  /** Most exchanged tokens, and their estimated bytes, held in memory. */
  readonly cacheMaxKeys: number;
  readonly cacheMaxBytes: number;
  readonly forcedRefresh: ForcedRefreshPolicy;
  readonly tracer?: Tracer | undefined;
  readonly meter?: Meter | undefined;
}

export interface TokenExchanges {
  get(
    t: ExchangeTargetInput,
    minValidityMs: number,
    signal?: AbortSignal,
  ): Promise<ExchangedRecord>;
  watch(t: ExchangeTargetInput, listener: Listener<WatchEvent>, signal: AbortSignal): () => void;
  close(): void;
}

export function createTokenExchanges(opts: TokenExchangesOptions): TokenExchanges {
  const { clock, catalog, source } = opts;
  const targets = new Map<string, ExchangeTargetInput>();
  const issuedTypes = new WeakMap<LiveRecord, string>();
  const sourceWatches = new Map<string, AbortController>();
  const hub = createWatchHub<WatchEvent>({
    onFirst: (id) => {
      const t = targets.get(id);
      if (t === undefined) return;
      // While anyone watches the exchanged token, its subject's end is its end.
      const ac = new AbortController();
      sourceWatches.set(id, ac);
      source.watch(t.subject, { next: () => {}, end: (err) => err && hub.end(id, err) }, ac.signal);
      const e = cache.find(id);
      if (e !== undefined) scheduler.update(e);
    },
    onLast: (id) => {
      sourceWatches.get(id)?.abort();
      sourceWatches.delete(id);
    },
  });
  const streams = createStreams({ hub, maxStreams: opts.maxStreams, tracer: opts.tracer });
  const metrics = createVendorMetrics(opts.meter ?? noopMeter);
  const cacheMetrics = cacheInstruments(metrics, "exchanges");
  const forced = createForcedRefreshes(opts.forcedRefresh, metrics);
  const cache = createKeyCache({
    clock,
    idleEvictMs: opts.idleEvictMs,
    maxEntries: opts.cacheMaxKeys,
    maxBytes: opts.cacheMaxBytes,
    pinned: (e) => hub.has(e.id) || e.refresh.inflight !== undefined,
    onDrop: (e) => {
      scheduler.cancel(e);
      targets.delete(e.id);
    },
    onEvict: cacheMetrics.onEvict,
  });
  const stopGauges = observeGauges(cacheMetrics.gauges(cache));
  const scheduler = createRenewalScheduler({
    clock,
    minRefreshIntervalMs: opts.minRefreshIntervalMs,
    holds: cache.holds,
    needed: (e) => hub.has(e.id),
    onDue: (e) =>
      refresher.refresh(e, "background").catch((err: unknown) => {
        if (
          isTokenVendError(err, "UPSTREAM_UNAVAILABLE") ||
          isTokenVendError(err, "STORE_UNAVAILABLE")
        ) {
          if (!scheduler.armed(e)) scheduler.update(e);
        } else {
          hub.end(e.id, err as Error);
        }
      }),
  });
  const telemetry = createRefreshTelemetry({
    tracer: opts.tracer,
    metrics,
    clock,
    grantTypeOf: () => "token_exchange",
  });

  const subjectToken = (t: ExchangeTargetInput, signal: AbortSignal): Promise<LiveRecord> =>
    t.subject.kind === "session"
      ? source.getValidTokens(t.subject, signal)
      : source.getToken(t.subject.grant, 0, signal);

  const exchange = async (entry: KeyEntry): Promise<LiveRecord> => {
    const t = targets.get(entry.id);
    if (t === undefined)
      throw new TokenVendError("SESSION_NOT_FOUND", "the exchanged token is gone");
    const signal = AbortSignal.any([opts.signal, AbortSignal.timeout(opts.refreshTimeoutMs)]);
    const subject = await subjectToken(t, signal);
    const startedAt = clock.now();
    const res = await opts.upstream
      .exchange(entry.provider, {
        signal,
        subjectToken: subject.tokens.accessToken,
        subjectTokenType: accessTokenType,
        audience: t.audience,
        scopes: t.scopes,
        requestedTokenType: t.requestedTokenType,
      })
      .catch((err: unknown) => {
        if (err instanceof UpstreamError && err.oauthError === "unsupported_grant_type") {
          throw unsupported(entry.provider, err);
        }
        throw flowError(err, entry.provider, "the token exchange");
      });
    const lifetime = catalog.provider(entry.provider).lifetime;
    const tokens = {
      ...renewedTokens(undefined, res, startedAt, lifetime),
      refreshToken: undefined,
      subject: subject.tokens.subject,
      clientId: subject.tokens.clientId,
    };
    const record: LiveRecord = {
      key: entry.key,
      generation: (entry.record?.generation ?? 0) + 1,
      reason: "refreshed",
      tokens,
    };
    issuedTypes.set(record, res.issuedTokenType);
    if (cache.holds(entry)) {
      entry.record = record;
      cache.resized(entry);
      entry.refreshAt = refreshAt(tokens, lifetime, opts.random);
      entry.renewedAt = clock.now();
      refresher.reset(entry);
      hub.publish(entry.id, { record, reason: "refreshed" });
      scheduler.update(entry);
    }
    return record;
  };

  const refresher = createRefresher({
    clock,
    random: opts.random,
    logger: opts.logger,
    catalog,
    signal: opts.signal,
    telemetry,
    run: (entry) => exchange(entry),
    onBackoff: (e) => scheduler.update(e),
  });

  const entryOf = (t: ExchangeTargetInput): KeyEntry => {
    const s = t.subject;
    const provider = s.kind === "session" ? s.provider : catalog.grant(s.grant).provider;
    catalog.provider(provider);
    if (!flowProvider(opts.providers, provider).tokenExchange) throw unsupported(provider);
    const subjectId = keyId(
      s.kind === "session" ? sessionKey(s.sessionId, s.provider) : grantKey(s.grant),
    );
    const parts = [
      subjectId,
      t.audience,
      [...t.scopes].sort().join(" "),
      t.requestedTokenType ?? "",
    ];
    // A session key no stored session can have: ids never contain the unit separator.
    const entry = cache.entry(sessionKey(`x\u001f${parts.join("\u001f")}`, provider), provider);
    // Kept without the caller's owner: who may read the subject is checked per call (get), and
    // the renewal reads it for every caller of the entry alike.
    if (!targets.has(entry.id)) {
      targets.set(
        entry.id,
        s.kind === "session" && s.owner !== undefined
          ? { ...t, subject: { ...s, owner: undefined } }
          : t,
      );
    }
    return entry;
  };

  const get = async (t: ExchangeTargetInput, minValidityMs: number, signal?: AbortSignal) => {
    const entry = entryOf(t);
    entry.lastUsedAt = clock.now();
    const s = t.subject;
    // The subject is read for this caller on every call (a cache hit when it is): the cached
    // exchange must not outlive a revoked subject, nor serve another owner's session (the
    // refresh reads the subject as the entry's first caller did).
    await subjectToken(t, signal ?? opts.signal);
    let record = entry.record;
    if (record !== undefined && s.kind === "session") {
      // The binding holds for a cached exchange as for the subject itself.
      const bad =
        (s.expectedSubject && s.expectedSubject !== record.tokens.subject) ||
        (s.expectedClientId && s.expectedClientId !== record.tokens.clientId);
      if (bad) {
        // INVALID_BINDING unless the subject was logged in again as the one expected: then anew.
        await subjectToken(t, signal ?? opts.signal);
        record = undefined;
      }
    }
    if (record !== undefined) {
      const lifetime = catalog.provider(entry.provider).lifetime;
      const state = tokenState(
        record.tokens,
        lifetime,
        entry.refreshAt,
        clock.now(),
        minValidityMs,
      );
      if (state === "stale") void refresher.refresh(entry, "revalidate").catch(() => {});
      const now = clock.now();
      if (state === "expired" && now < unusableAt(record.tokens, lifetime)) {
        // Valid, but not as long as this caller asks: a refresh it forces, bounded per key.
        forced.admit(entry, record, lifetime, minValidityMs, now);
      }
      if (state === "expired") record = undefined;
    }
    record ??= await abandonWait(refresher.refresh(entry, "caller"), signal);
    return { record, issuedTokenType: issuedTypes.get(record) ?? accessTokenType };
  };

  return {
    get,
    watch(t, listener, signal) {
      let entry: KeyEntry;
      try {
        entry = entryOf(t);
      } catch (err) {
        listener.end(err as Error);
        return () => {};
      }
      return streams.open(
        entry.id,
        entry.provider,
        listener,
        signal,
        async () => (await get(t, 0, signal)).record,
      );
    },
    close() {
      stopGauges();
      scheduler.stop();
      hub.endAll(shuttingDownError());
      for (const ac of sourceWatches.values()) ac.abort();
      sourceWatches.clear();
    },
  };
}

function unsupported(provider: string, cause?: unknown): TokenVendError {
  return new TokenVendError(
    "UNSUPPORTED",
    `provider "${provider}" does not support token exchange (set providers.${provider}.tokenExchange when it does)`,
    { cause },
  );
}
