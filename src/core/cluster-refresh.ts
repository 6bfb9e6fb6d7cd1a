// One refresh of a key for the whole cluster. The store is looked at first: a
// usable generation newer than the one this refresh replaces (renewed by
// another replica) ends it without a provider call. Otherwise the replica
// claims (key, generation) before redeeming its refresh token; a replica that
// loses the claim waits for the winner's generation; a dead claim is taken over
// by the one replica whose deleteOne removed it. The renewal is persisted
// before anyone gets it, and a renewal whose write failed is kept and written
// before anything else (a rotated refresh token is never dropped).

import { attr, type VendorMetrics } from "../telemetry/metrics.ts";
import type { Catalog, ProviderSettings } from "./catalog.ts";
import type { Clock } from "./clock.ts";
import { notFoundError, TokenVendError } from "./errors.ts";
import type { KeyEntry } from "./key-cache.ts";
import { type LifetimePolicy, unusableAt } from "./lifetime.ts";
import type { Logger } from "./logger.ts";
import type { RefreshInfo, RefreshTelemetry } from "./refresh-telemetry.ts";
import { isLive, type LiveRecord, type TokenRecord, type TokenSet } from "./token.ts";
import type { RefreshClaim, TokenStore } from "./token-store.ts";
import { reasonOf, type WatchReason } from "./token-stream.ts";
import type { UpstreamClient, UpstreamTokenResponse } from "./upstream.ts";

export interface ClusterRefreshOptions {
  /** The classified store (classified-store.ts). */
  readonly store: TokenStore;
  readonly upstream: UpstreamClient;
  readonly catalog: Catalog;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly telemetry: RefreshTelemetry;
  readonly metrics: Pick<VendorMetrics, "claimWaits" | "claimTakeovers">;
  /** The service's lifetime; every refresh runs under it and refreshTimeoutMs. */
  readonly signal: AbortSignal;
  readonly refreshTimeoutMs: number;
  /** This replica's id, written into its claims. */
  readonly replicaId: string;
  readonly claimLeaseMs: number;
  /** How often a replica waiting on another's claim looks for the new generation. */
  readonly claimPollMs: number;
  /** Makes `record` the key's cached generation and pushes it to its streams as `reason`. */
  readonly adopt: (entry: KeyEntry, record: LiveRecord, reason: WatchReason) => void;
  /** The key was revoked: drop it and end its streams. */
  readonly forget: (entry: KeyEntry) => void;
  /** Whether the entry is still the cached one of its key. */
  readonly holds: (entry: KeyEntry) => boolean;
}

export interface ClusterRefresh {
  run(entry: KeyEntry, info: RefreshInfo): Promise<LiveRecord>;
  /** Refreshes that waited on another replica's claim, and dead claims taken over. */
  counts(): { claimWaits: number; claimTakeovers: number };
}

type Seen = { done: true; record: LiveRecord } | { done: false; current: LiveRecord | undefined };

export function createClusterRefresh(opts: ClusterRefreshOptions): ClusterRefresh {
  const { store, clock, catalog, telemetry, logger: log } = opts;
  let claimWaits = 0;
  let claimTakeovers = 0;
  const providerAttrs = new Map<string, { [attr.provider]: string }>();
  const attrsOf = (provider: string) => {
    let a = providerAttrs.get(provider);
    if (a === undefined) {
      a = { [attr.provider]: provider };
      providerAttrs.set(provider, a);
    }
    return a;
  };

  /** The active generation: taken when newer than `after` and still usable, else the one to refresh from. */
  const readNewer = async (
    entry: KeyEntry,
    prov: ProviderSettings,
    signal: AbortSignal,
    after: number,
  ): Promise<Seen> => {
    const stored = await store.getActive(entry.key, { signal });
    if (stored !== undefined && !isLive(stored)) {
      opts.forget(entry);
      throw notFoundError(entry.key);
    }
    if (
      stored !== undefined &&
      stored.generation > after &&
      clock.now() < unusableAt(stored.tokens, prov.lifetime)
    ) {
      opts.adopt(entry, stored, reasonOf(stored));
      return { done: true, record: stored };
    }
    const current = stored ?? entry.record;
    if (entry.key.kind === "session" && current === undefined) throw notFoundError(entry.key);
    return { done: false, current };
  };

  /** Writes `record` as its generation; on conflict, or under a newer one, returns the active one. */
  const persist = async (entry: KeyEntry, record: LiveRecord): Promise<TokenRecord> => {
    const res = await store.insert(record, { signal: opts.signal });
    if (!res.inserted) return res.winner;
    // A newer generation (a revocation and a new login while this refresh ran)
    // may sit above the one just written: the active one is the answer.
    const active = await store.getActive(entry.key, { signal: opts.signal });
    if (active !== undefined && active.generation > record.generation) return active;
    void store.pruneBelow(entry.key, record.generation, { signal: opts.signal }).catch(() => {});
    return record;
  };

  /** Persists the pending renewal; a write error keeps it pending. */
  const saveUnsaved = async (entry: KeyEntry): Promise<LiveRecord> => {
    const winner = await persist(entry, entry.refresh.unsaved!);
    entry.refresh.unsaved = undefined;
    if (!isLive(winner)) {
      opts.forget(entry);
      throw notFoundError(entry.key);
    }
    opts.adopt(entry, winner, "refreshed");
    return opts.holds(entry) && entry.record !== undefined ? entry.record : winner;
  };

  const callUpstream = (
    entry: KeyEntry,
    current: LiveRecord | undefined,
    signal: AbortSignal,
  ): Promise<UpstreamTokenResponse> => {
    const key = entry.key;
    if (key.kind === "grant") {
      const g = catalog.grant(key.grant);
      return opts.upstream.clientCredentials(g.provider, {
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
    const scopes = catalog.provider(entry.provider).refreshScopes;
    return opts.upstream.refresh(key.provider, {
      signal,
      refreshToken,
      ...(scopes !== undefined && scopes.length > 0 ? { scopes } : {}),
    });
  };

  /** Waits on a claim another replica holds, or takes it over once its lease ended; true when taken. */
  const contend = async (
    entry: KeyEntry,
    holder: RefreshClaim,
    signal: AbortSignal,
    firstWait: boolean,
  ): Promise<boolean> => {
    if (holder.leaseUntil <= clock.now() && (await store.releaseClaim(holder, { signal }))) {
      claimTakeovers++;
      opts.metrics.claimTakeovers.add(1, attrsOf(entry.provider));
      telemetry.activeSpan()?.addEvent("claim.takeover");
      log.warn(
        { provider: entry.provider, deadOwner: holder.owner },
        "took over a dead refresh claim",
      );
      return true;
    }
    if (firstWait) {
      claimWaits++;
      opts.metrics.claimWaits.add(1, attrsOf(entry.provider));
      telemetry.activeSpan()?.addEvent("claim.wait");
    }
    await clock.sleep(opts.claimPollMs, signal);
    return false;
  };

  const run = async (entry: KeyEntry, info: RefreshInfo): Promise<LiveRecord> => {
    // The generation this refresh replaces. Any newer one that is usable, made
    // elsewhere and seen here through the store or the sync while this refresh
    // ran, is the answer: redeeming its refresh token would renew twice.
    const from = entry.record?.generation ?? 0;
    const signal = AbortSignal.any([opts.signal, AbortSignal.timeout(opts.refreshTimeoutMs)]);
    const prov = catalog.provider(entry.provider);
    if (entry.refresh.unsaved !== undefined) return saveUnsaved(entry);
    let waited = false;
    for (;;) {
      const seen = await readNewer(entry, prov, signal, from);
      if (seen.done) {
        info.source = "store";
        return seen.record;
      }
      const claim: RefreshClaim = {
        key: entry.key,
        generation: seen.current?.generation ?? 0,
        owner: opts.replicaId,
        leaseUntil: clock.now() + opts.claimLeaseMs,
      };
      const got = await store.claim(claim, { signal });
      if (!got.acquired) {
        if (!(await contend(entry, got.holder, signal, !waited))) waited = true;
        continue;
      }
      let keepClaim = false;
      try {
        // The previous holder persists before it releases: look once more.
        const again = await readNewer(entry, prov, signal, from);
        if (again.done) {
          info.source = "store";
          return again.record;
        }
        const current = again.current;
        // The store moved on since the claim (an unusable newer generation):
        // claim the one that would be redeemed instead (this one is released).
        if ((current?.generation ?? 0) !== claim.generation) continue;
        const startedAt = clock.now();
        const res = await callUpstream(entry, current, signal);
        entry.refresh.unsaved = {
          key: entry.key,
          generation: (current?.generation ?? 0) + 1,
          reason: entry.key.kind === "grant" ? "granted" : "refreshed",
          tokens: renewedTokens(current?.tokens, res, startedAt, prov.lifetime),
        };
        try {
          return await saveUnsaved(entry);
        } catch (err) {
          // The old refresh token is spent: nobody else may redeem it while ours is unsaved.
          keepClaim = entry.refresh.unsaved !== undefined;
          throw err;
        }
      } finally {
        if (!keepClaim) void store.releaseClaim(claim).catch(() => {});
      }
    }
  };

  return { run, counts: () => ({ claimWaits, claimTakeovers }) };
}

/** The token set after a renewal: omitted refresh and id tokens are carried forward. */
export function renewedTokens(
  previous: TokenSet | undefined,
  res: UpstreamTokenResponse,
  issuedAt: number,
  lifetime: LifetimePolicy,
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
    ...(previous?.owner !== undefined ? { owner: previous.owner } : {}),
  };
}
