// Writes that come from callers: a login's tokens stored as a session's next
// generation, and revocation (a tombstone generation that hides all below it,
// then RFC 7009 revocation at the provider when asked). Both insert the next
// generation against the unique (key, generation) index and retry a lost race
// on the new active one. The next generation number is found without opening
// anything, so a session whose newest document cannot be opened (a lost key)
// can still be overwritten or revoked.

import type { Catalog } from "./catalog.ts";
import { isTokenVendError, notOwnerError, TokenVendError } from "./errors.ts";
import type { KeyCache, KeyEntry } from "./key-cache.ts";
import { errorText, type Logger } from "./logger.ts";
import {
  isLive,
  keyId,
  type LiveRecord,
  sessionKey,
  type TokenKey,
  type TokenRecord,
  type TokenSet,
} from "./token.ts";
import type { KeyGeneration, StoreCallOptions, TokenStore } from "./token-store.ts";
import type { WatchReason } from "./token-stream.ts";
import type { UpstreamClient } from "./upstream.ts";

export interface StoreTokensInput {
  readonly sessionId: string;
  readonly provider: string;
  /** tokens.owner is recorded as the session's owner. */
  readonly tokens: TokenSet;
  /** Set: a live session of another owner is not overwritten (PERMISSION_DENIED, NOT_OWNER). */
  readonly owner?: string | undefined;
  /** Called before the key's first generation is stored; its rejection refuses the store. */
  readonly admitNewKey?: (() => Promise<void>) | undefined;
}

export interface RevokeInput {
  readonly sessionId: string;
  readonly provider?: string | undefined;
  readonly revokeUpstream: boolean;
  /** Set: nothing is revoked when a session's token belongs to another owner (NOT_OWNER). */
  readonly owner?: string | undefined;
}

export interface ProviderFailure {
  readonly provider: string;
  readonly code: string;
  readonly message: string;
}

export interface RevokeResult {
  readonly revokedProviders: string[];
  readonly upstreamFailures: ProviderFailure[];
}

export interface SessionWrites {
  store(input: StoreTokensInput, signal: AbortSignal | undefined): Promise<number>;
  revoke(input: RevokeInput, signal: AbortSignal | undefined): Promise<RevokeResult>;
}

export interface SessionWritesOptions {
  /** The classified store (classified-store.ts). */
  readonly store: TokenStore;
  readonly upstream: UpstreamClient;
  readonly catalog: Catalog;
  readonly cache: KeyCache;
  readonly logger: Logger;
  /** The service's lifetime: revocation at the provider runs under it, not under the caller's. */
  readonly signal: AbortSignal;
  readonly upstreamTimeoutMs: number;
  readonly adopt: (entry: KeyEntry, record: LiveRecord, reason: WatchReason) => void;
  /** Ends the key's streams with NOT_FOUND and drops it from the cache. */
  readonly forget: (key: TokenKey) => void;
}

const maxInsertRetries = 8;

export function createSessionWrites(opts: SessionWritesOptions): SessionWrites {
  const { store, catalog, logger: log } = opts;

  /**
   * Inserts the next generation after whatever is active, retrying on lost races. With
   * `withPrevious`, also the generation it replaces, opened: undefined when it does not open.
   */
  const insertNext = async <R extends TokenRecord>(
    key: TokenKey,
    make: (generation: number, previous: TokenRecord | undefined) => R,
    o: StoreCallOptions,
    withPrevious = false,
    admitNewKey?: () => Promise<void>,
  ): Promise<{ record: R; previous: TokenRecord | undefined; unreadable: boolean }> => {
    for (let i = 0; i < maxInsertRetries; i++) {
      let previous: TokenRecord | undefined;
      let unreadable = false;
      let generation = (await store.activeGenerations([key], o)).get(keyId(key)) ?? 0;
      if (generation === 0 && admitNewKey !== undefined) await admitNewKey();
      if (withPrevious && generation > 0) {
        try {
          previous = await store.getActive(key, o);
          generation = previous?.generation ?? generation;
        } catch (err) {
          if (!isTokenVendError(err, "TOKEN_UNREADABLE")) throw err;
          unreadable = true;
        }
      }
      const record = make(generation + 1, previous);
      const res = await store.insert(record, o);
      if (res.inserted) {
        void store.pruneBelow(key, record.generation).catch(() => {});
        return { record, previous, unreadable };
      }
    }
    throw new TokenVendError("STORE_UNAVAILABLE", "too many concurrent writers for one key");
  };

  const revokeUpstream = async (
    provider: string,
    t: TokenSet,
  ): Promise<ProviderFailure | undefined> => {
    try {
      await opts.upstream.revoke(provider, {
        signal: AbortSignal.any([opts.signal, AbortSignal.timeout(opts.upstreamTimeoutMs)]),
        token: t.refreshToken ?? t.accessToken,
        tokenTypeHint: t.refreshToken !== undefined ? "refresh_token" : "access_token",
      });
      return undefined;
    } catch (err) {
      log.warn({ provider, err: errorText(err) }, "upstream revocation failed");
      return {
        provider,
        code: "UPSTREAM_UNAVAILABLE",
        message: `revocation at provider "${provider}" failed`,
      };
    }
  };

  /** NOT_OWNER, before anything is revoked, when a live session there belongs to another owner. */
  const refuseOthers = async (
    found: readonly KeyGeneration[],
    owner: string,
    signal: AbortSignal | undefined,
  ) => {
    for (const { key, revoked } of found) {
      if (revoked) continue;
      const r = await store.getActive(key, { signal }).catch((err: unknown) => {
        // A document that does not open names no owner: revocable, as it is unreadable anyway.
        if (isTokenVendError(err, "TOKEN_UNREADABLE")) return undefined;
        throw err;
      });
      if (isLive(r) && r.tokens.owner !== owner) throw notOwnerError();
    }
  };

  return {
    async store(input, signal) {
      catalog.provider(input.provider);
      const entry = opts.cache.entry(sessionKey(input.sessionId, input.provider), input.provider);
      const key = entry.key;
      const { record } = await insertNext(
        key,
        (generation, previous): LiveRecord => {
          // A session that does not open cannot name its owner: it may be stored over.
          if (
            isLive(previous) &&
            input.owner !== undefined &&
            previous.tokens.owner !== input.owner
          ) {
            throw notOwnerError();
          }
          return { key, generation, reason: "stored", tokens: input.tokens };
        },
        { signal },
        input.owner !== undefined,
        input.admitNewKey,
      );
      opts.adopt(entry, record, "stored");
      return record.generation;
    },

    async revoke(q, signal) {
      if (q.provider !== undefined) catalog.provider(q.provider);
      // Key and generation only: a document that does not open is revoked all the same.
      const found = (await store.sessionGenerations(q.sessionId, { signal })).filter(
        (g) =>
          q.provider === undefined || (g.key.kind === "session" && g.key.provider === q.provider),
      );
      if (q.owner !== undefined) await refuseOthers(found, q.owner, signal);
      const revokedProviders: string[] = [];
      const upstreamFailures: ProviderFailure[] = [];
      for (const { key, revoked } of found) {
        if (revoked || key.kind !== "session") continue;
        const upstream = q.revokeUpstream && catalog.hasProvider(key.provider);
        const { previous, unreadable } = await insertNext(
          key,
          (generation) => ({ key, generation, reason: "revoked" }),
          { signal },
          upstream,
        );
        opts.forget(key);
        // Revoked by someone else meanwhile: nothing was left to revoke.
        if (previous !== undefined && !isLive(previous)) continue;
        revokedProviders.push(key.provider);
        if (!upstream) continue;
        if (unreadable) {
          upstreamFailures.push({
            provider: key.provider,
            code: "TOKEN_UNREADABLE",
            message: `the stored token cannot be opened, so it was not revoked at provider "${key.provider}"`,
          });
        } else if (isLive(previous)) {
          const failure = await revokeUpstream(key.provider, previous.tokens);
          if (failure !== undefined) upstreamFailures.push(failure);
        }
      }
      revokedProviders.sort();
      return { revokedProviders, upstreamFailures };
    },
  };
}
