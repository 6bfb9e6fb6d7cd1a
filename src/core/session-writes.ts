// Writes that come from callers: a login's tokens stored as a session's next
// generation, and revocation (a tombstone generation that hides all below it,
// then RFC 7009 revocation at the provider when asked). Both insert the next
// generation against the unique (key, generation) index and retry a lost race
// on the new active one.

import type { Catalog } from "./catalog.ts";
import { notOwnerError, TokenVendError } from "./errors.ts";
import type { KeyCache, KeyEntry } from "./key-cache.ts";
import { errorText, type Logger } from "./logger.ts";
import {
  isLive,
  type LiveRecord,
  sessionKey,
  type TokenKey,
  type TokenRecord,
  type TokenSet,
} from "./token.ts";
import type { StoreCallOptions, TokenStore } from "./token-store.ts";
import type { WatchReason } from "./token-stream.ts";
import type { UpstreamClient } from "./upstream.ts";

export interface StoreTokensInput {
  readonly sessionId: string;
  readonly provider: string;
  /** tokens.owner is recorded as the session's owner. */
  readonly tokens: TokenSet;
  /** Set: a live session of another owner is not overwritten (PERMISSION_DENIED, NOT_OWNER). */
  readonly owner?: string | undefined;
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

  /** Inserts the next generation after whatever is active, retrying on lost races. */
  const insertNext = async <R extends TokenRecord>(
    key: TokenKey,
    make: (generation: number, previous: TokenRecord | undefined) => R,
    o: StoreCallOptions,
  ): Promise<{ record: R; previous: TokenRecord | undefined }> => {
    for (let i = 0; i < maxInsertRetries; i++) {
      const previous = await store.getActive(key, o);
      const record = make((previous?.generation ?? 0) + 1, previous);
      const res = await store.insert(record, o);
      if (res.inserted) {
        void store.pruneBelow(key, record.generation).catch(() => {});
        return { record, previous };
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

  return {
    async store(input, signal) {
      catalog.provider(input.provider);
      const entry = opts.cache.entry(sessionKey(input.sessionId, input.provider), input.provider);
      const key = entry.key;
      const { record } = await insertNext(
        key,
        (generation, previous): LiveRecord => {
          const owned = isLive(previous) ? previous.tokens.owner : undefined;
          if (input.owner !== undefined && isLive(previous) && owned !== input.owner) {
            throw notOwnerError();
          }
          return { key, generation, reason: "stored", tokens: input.tokens };
        },
        { signal },
      );
      opts.adopt(entry, record, "stored");
      return record.generation;
    },

    async revoke(q, signal) {
      if (q.provider !== undefined) catalog.provider(q.provider);
      const records =
        q.provider !== undefined
          ? await store
              .getActive(sessionKey(q.sessionId, q.provider), { signal })
              .then((r) => (r ? [r] : []))
          : await store.getSession(q.sessionId, { signal });
      const revokedProviders: string[] = [];
      const upstreamFailures: ProviderFailure[] = [];
      const theirs = records.some(
        (r) => isLive(r) && q.owner !== undefined && r.tokens.owner !== q.owner,
      );
      if (theirs) throw notOwnerError();
      for (const found of records) {
        if (!isLive(found) || found.key.kind !== "session") continue;
        const key = found.key;
        const { previous } = await insertNext(
          key,
          (generation) => ({ key, generation, reason: "revoked" }),
          { signal },
        );
        opts.forget(key);
        if (!isLive(previous)) continue;
        revokedProviders.push(key.provider);
        if (q.revokeUpstream && catalog.hasProvider(key.provider)) {
          const failure = await revokeUpstream(key.provider, previous.tokens);
          if (failure !== undefined) upstreamFailures.push(failure);
        }
      }
      revokedProviders.sort();
      return { revokedProviders, upstreamFailures };
    },
  };
}
