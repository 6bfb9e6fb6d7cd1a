// One refresh of a key for the whole cluster. The store is looked at first: a
// usable generation newer than the one this refresh replaces (renewed by
// another replica) ends it without a provider call. Otherwise the replica
// claims (key, generation) before redeeming its refresh token; a replica that
// loses the claim waits for the winner's generation; a dead claim is taken over
// by the one replica whose deleteOne removed it. The renewal is persisted
// before anyone gets it, and a renewal whose write failed is kept and written
// before anything else (a rotated refresh token is never dropped).
//
// Once the provider answered, the holder records the renewal in its claim; while
// it stays unsaved, the holder's heartbeat keeps the claim's lease alive (every
// third of claimLeaseMs), so nobody else redeems the spent refresh token. A dead
// claim that carries a renewal is finished by storing that renewal, never by
// redeeming again. A renewal that lost to a revocation is revoked at the
// provider: nobody will ever use or revoke those tokens otherwise.

import { attr, type VendorMetrics } from "../telemetry/metrics.ts";
import type { Catalog, ProviderSettings } from "./catalog.ts";
import type { Clock, Timer } from "./clock.ts";
import { notFoundError, TokenVendError } from "./errors.ts";
import type { KeyEntry } from "./key-cache.ts";
import { type LifetimePolicy, unusableAt } from "./lifetime.ts";
import { errorText, type Logger } from "./logger.ts";
import type { ProviderLimiter } from "./provider-limiter.ts";
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
  /** The provider's request slots: one is held from the claim to the provider's answer. */
  readonly limiter: ProviderLimiter;
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
  /** Claims kept alive while their renewal is unsaved: the heartbeat, per key. */
  const held = new Map<KeyEntry, { claim: RefreshClaim; timer: Timer | undefined }>();
  opts.signal.addEventListener(
    "abort",
    () => {
      for (const h of held.values()) h.timer?.cancel();
      held.clear();
    },
    { once: true },
  );
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

  /** Persists the pending renewal; a write error keeps it pending (and its claim alive). */
  const saveUnsaved = async (entry: KeyEntry): Promise<LiveRecord> => {
    const renewal = entry.refresh.unsaved!;
    const winner = await persist(entry, renewal);
    entry.refresh.unsaved = undefined;
    letGo(entry);
    if (!isLive(winner)) {
      if (winner.generation === renewal.generation) discard(entry, renewal);
      opts.forget(entry);
      throw notFoundError(entry.key);
    }
    opts.adopt(entry, winner, "refreshed");
    return opts.holds(entry) && entry.record !== undefined ? entry.record : winner;
  };

  /** Revokes at the provider what a refresh obtained and a revocation made useless. */
  const discard = (entry: KeyEntry, renewal: LiveRecord) => {
    if (entry.key.kind !== "session") return;
    const t = renewal.tokens;
    const provider = entry.key.provider;
    log.info({ provider }, "a renewal lost to a revocation; revoking its tokens at the provider");
    void opts.upstream
      .revoke(provider, {
        signal: AbortSignal.any([opts.signal, AbortSignal.timeout(opts.refreshTimeoutMs)]),
        token: t.refreshToken ?? t.accessToken,
        tokenTypeHint: t.refreshToken !== undefined ? "refresh_token" : "access_token",
      })
      .catch((err: unknown) =>
        log.warn({ provider, err: errorText(err) }, "revoking a discarded renewal failed"),
      );
  };

  /** Keeps `claim` alive, recording the unsaved renewal, until letGo(entry). */
  const holdClaim = (entry: KeyEntry, claim: RefreshClaim) => {
    letGo(entry, false);
    const h: { claim: RefreshClaim; timer: Timer | undefined } = { claim, timer: undefined };
    held.set(entry, h);
    const beat = () => {
      h.timer = undefined;
      const renewal = entry.refresh.unsaved;
      if (held.get(entry) !== h || renewal === undefined || opts.signal.aborted) return;
      void store
        .renewClaim(h.claim, clock.now() + opts.claimLeaseMs, renewal, { signal: opts.signal })
        .then(
          (renewed) => {
            if (held.get(entry) !== h) return;
            if (renewed === undefined) {
              // Taken over: the taker stores the renewal the claim carries.
              held.delete(entry);
              return;
            }
            h.claim = renewed;
            h.timer = clock.setTimer(opts.claimLeaseMs / 3, beat);
          },
          () => {
            if (held.get(entry) === h) h.timer = clock.setTimer(opts.claimLeaseMs / 3, beat);
          },
        );
    };
    h.timer = clock.setTimer(opts.claimLeaseMs / 3, beat);
  };

  /** Stops the heartbeat of the key's held claim and (by default) releases the claim. */
  const letGo = (entry: KeyEntry, release = true) => {
    const h = held.get(entry);
    if (h === undefined) return;
    held.delete(entry);
    h.timer?.cancel();
    if (release) void store.releaseClaim(h.claim).catch(() => {});
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

  /**
   * Waits on a claim another replica holds, or takes it over once its lease ended: "taken" to
   * claim again and redeem, or the renewal the dead holder had obtained, now stored.
   */
  const contend = async (
    entry: KeyEntry,
    holder: RefreshClaim,
    signal: AbortSignal,
    firstWait: boolean,
  ): Promise<"taken" | "waited" | { finished: TokenRecord }> => {
    const dead = holder.leaseUntil <= clock.now();
    // Its holder had redeemed: the refresh token is spent and the renewal is the answer. Stored
    // before the claim goes (storing it twice is harmless: one insert wins, both get the winner).
    const finished =
      dead && holder.renewal !== undefined ? await persist(entry, holder.renewal) : undefined;
    const took = dead && (await store.releaseClaim(holder, { signal }));
    if (took) {
      claimTakeovers++;
      opts.metrics.claimTakeovers.add(1, attrsOf(entry.provider));
      telemetry.activeSpan()?.addEvent("claim.takeover");
      log.warn(
        { provider: entry.provider, deadOwner: holder.owner, redeemed: finished !== undefined },
        "took over a dead refresh claim",
      );
    }
    if (finished !== undefined) return { finished };
    if (took) return "taken";
    if (firstWait) {
      claimWaits++;
      opts.metrics.claimWaits.add(1, attrsOf(entry.provider));
      telemetry.activeSpan()?.addEvent("claim.wait");
    }
    await clock.sleep(opts.claimPollMs, signal);
    return "waited";
  };

  const run = async (entry: KeyEntry, info: RefreshInfo): Promise<LiveRecord> => {
    // The generation this refresh replaces. Any newer one that is usable, made
    // elsewhere and seen here through the store or the sync while this refresh
    // ran, is the answer: redeeming its refresh token would renew twice.
    const from = entry.record?.generation ?? 0;
    const bounded = () =>
      AbortSignal.any([opts.signal, AbortSignal.timeout(opts.refreshTimeoutMs)]);
    let signal = bounded();
    const prov = catalog.provider(entry.provider);
    if (entry.refresh.unsaved !== undefined) return saveUnsaved(entry);
    let waited = false;
    for (;;) {
      const seen = await readNewer(entry, prov, signal, from);
      if (seen.done) {
        info.source = "store";
        return seen.record;
      }
      // A slot at the provider before the claim: the claim's lease must not run out in the
      // queue. The wait is the service's (a shared refresh keeps its place), not the timeout's.
      let release: ((unused?: boolean) => void) | undefined = await opts.limiter.acquire(
        entry.provider,
        opts.signal,
      );
      signal = bounded();
      let claim: RefreshClaim = {
        key: entry.key,
        generation: seen.current?.generation ?? 0,
        owner: opts.replicaId,
        leaseUntil: clock.now() + opts.claimLeaseMs,
      };
      const got = await store.claim(claim, { signal }).catch((err: unknown) => {
        release?.(true);
        throw err;
      });
      if (!got.acquired) {
        // Another replica redeems: the slot goes back unused (waiting must not spend the rate).
        release(true);
        release = undefined;
        const outcome = await contend(entry, got.holder, signal, !waited);
        if (outcome === "waited") waited = true;
        else if (outcome !== "taken") {
          if (!isLive(outcome.finished)) {
            opts.forget(entry);
            throw notFoundError(entry.key);
          }
          opts.adopt(entry, outcome.finished, "refreshed");
          info.source = "store";
          return outcome.finished;
        }
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
        const res = await callUpstream(entry, current, signal).then(
          (r) => {
            release?.();
            return r;
          },
          (err: unknown) => {
            release?.();
            opts.limiter.observe(entry.provider, err);
            throw err;
          },
        );
        const renewal: LiveRecord = {
          key: entry.key,
          generation: (current?.generation ?? 0) + 1,
          reason: entry.key.kind === "grant" ? "granted" : "refreshed",
          tokens: renewedTokens(current?.tokens, res, startedAt, prov.lifetime),
        };
        entry.refresh.unsaved = renewal;
        // The refresh token is spent: the claim says so, with what replaced it, before the save.
        // Under a bound of its own: the refresh's may be nearly spent by a slow provider.
        claim = await store
          .renewClaim(claim, clock.now() + opts.claimLeaseMs, renewal, { signal: bounded() })
          .then((renewed) => renewed ?? claim)
          .catch(() => claim);
        try {
          return await saveUnsaved(entry);
        } catch (err) {
          // Nobody else may redeem the spent token while ours is unsaved: keep the claim alive.
          keepClaim = entry.refresh.unsaved !== undefined;
          if (keepClaim) holdClaim(entry, claim);
          throw err;
        }
      } finally {
        release?.(true);
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
