// GetAllUpstreamCredentials: every provider's token of a session from one store round trip,
// each then served like any key (refreshed when expired), with the providers that failed.

import type { Catalog } from "./catalog.ts";
import { storeFailure } from "./classified-store.ts";
import { isTokenVendError } from "./errors.ts";
import type { KeyCache, KeyEntry } from "./key-cache.ts";
import type { ProviderFailure } from "./session-writes.ts";
import { isLive, type LiveRecord } from "./token.ts";
import type { TokenStore } from "./token-store.ts";
import { accessError, type Binding, type WatchReason } from "./token-stream.ts";

export interface SessionReadsOptions {
  /** The classified store (classified-store.ts). */
  readonly store: TokenStore;
  readonly catalog: Catalog;
  readonly cache: KeyCache;
  readonly adopt: (entry: KeyEntry, record: LiveRecord, reason: WatchReason) => void;
  /** The serving path (token-vendor.ts). */
  readonly serve: (entry: KeyEntry, signal: AbortSignal | undefined) => Promise<LiveRecord>;
}

export function createSessionReads(opts: SessionReadsOptions) {
  const { store, catalog, cache } = opts;
  return async (
    sessionId: string,
    signal: AbortSignal | undefined,
    binding: Binding,
  ): Promise<{ credentials: Map<string, LiveRecord>; failures: ProviderFailure[] }> => {
    const reaches = binding.providers;
    // Providers beyond the caller's reach are neither checked nor served (nor refreshed).
    const records = (await store.getSession(sessionId, { signal })).filter(
      (r) => reaches === undefined || r.key.kind !== "session" || reaches(r.key.provider),
    );
    for (const r of records) {
      const refused = isLive(r) ? accessError(r, binding) : undefined;
      if (refused !== undefined) throw refused;
    }
    const credentials = new Map<string, LiveRecord>();
    const failures: ProviderFailure[] = [];
    await Promise.all(
      records.map(async (r) => {
        if (!isLive(r) || r.key.kind !== "session" || !catalog.hasProvider(r.key.provider)) return;
        const provider = r.key.provider;
        const entry = cache.entry(r.key, provider);
        opts.adopt(entry, r, "refreshed");
        try {
          credentials.set(provider, await opts.serve(entry, signal));
        } catch (err) {
          const e = storeFailure(err, signal);
          if (!isTokenVendError(e)) throw e;
          failures.push({ provider, code: e.code, message: e.message });
        }
      }),
    );
    failures.sort((a, b) => a.provider.localeCompare(b.provider));
    return { credentials, failures };
  };
}
