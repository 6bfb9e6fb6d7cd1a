// The embedded default: one process, nothing to install, nothing kept across restarts.
// Bounded by its capacity (./capacity.ts): a new key beyond it is refused; a revoked key is
// swept tombstoneRetentionMs after its revocation.

import { keyId, type TokenKey, type TokenRecord } from "../core/token.ts";
import {
  type InsertResult,
  type KeyGeneration,
  recordBytes,
  type StoreCapacity,
  type TokenStore,
} from "../core/token-store.ts";
import { pageOfIds } from "./active-page.ts";
import { createCapacity } from "./capacity.ts";
import { createClaimTable } from "./claim-table.ts";
import { pickUnused } from "./unused-sessions.ts";

export interface MemoryStoreOptions {
  /** Unbounded when absent. */
  readonly capacity?: StoreCapacity | undefined;
  /** Wall clock for revocation times (default Date.now). */
  readonly now?: (() => number) | undefined;
}

export function createMemoryStore(opts: MemoryStoreOptions = {}): TokenStore {
  // keyId -> generation -> record
  const keys = new Map<string, Map<number, TokenRecord>>();
  // sessionId -> keyIds of that session, for one-pass session reads
  const sessions = new Map<string, Set<string>>();
  // keyId -> when its active generation, a revocation, was written
  const revokedAt = new Map<string, number>();
  const claims = createClaimTable();
  const capacity = createCapacity("memory", opts.capacity);
  const now = opts.now ?? Date.now;

  const removeKey = (id: string) => {
    const gens = keys.get(id);
    if (gens === undefined) return;
    for (const r of gens.values()) capacity.removed(recordBytes(r));
    keys.delete(id);
    revokedAt.delete(id);
    const first = gens.values().next().value;
    if (first?.key.kind === "session") {
      const s = sessions.get(first.key.sessionId);
      s?.delete(id);
      if (s?.size === 0) sessions.delete(first.key.sessionId);
    }
  };

  const active = (id: string): TokenRecord | undefined => {
    const gens = keys.get(id);
    if (gens === undefined) return undefined;
    let best: TokenRecord | undefined;
    for (const r of gens.values())
      if (best === undefined || r.generation > best.generation) best = r;
    return best;
  };

  const insert = async (record: TokenRecord): Promise<InsertResult> => {
    const id = keyId(record.key);
    let gens = keys.get(id);
    const size = recordBytes(record);
    if (gens === undefined) {
      capacity.admitNewKey(keys.size, size);
      gens = new Map();
      keys.set(id, gens);
      if (record.key.kind === "session") {
        let s = sessions.get(record.key.sessionId);
        if (s === undefined) {
          s = new Set();
          sessions.set(record.key.sessionId, s);
        }
        s.add(id);
      }
    }
    const existing = gens.get(record.generation);
    if (existing !== undefined) return { inserted: false, winner: existing };
    gens.set(record.generation, record);
    capacity.added(size);
    if (active(id) === record) {
      if (record.reason === "revoked") revokedAt.set(id, now());
      else revokedAt.delete(id);
    }
    return { inserted: true };
  };

  return {
    kind: "memory",
    shared: false, // this process's memory: nobody else writes it
    async getActive(key) {
      return active(keyId(key));
    },
    async getSession(sessionId) {
      const out: TokenRecord[] = [];
      for (const id of sessions.get(sessionId) ?? []) {
        const r = active(id);
        if (r !== undefined) out.push(r);
      }
      return out;
    },
    async sessionGenerations(sessionId) {
      const out: KeyGeneration[] = [];
      for (const id of sessions.get(sessionId) ?? []) {
        const r = active(id);
        if (r !== undefined)
          out.push({ key: r.key, generation: r.generation, revoked: r.reason === "revoked" });
      }
      return out;
    },
    insert,
    async activeGenerations(list: readonly TokenKey[]) {
      const out = new Map<string, number>();
      for (const key of list) {
        const id = keyId(key);
        const r = active(id);
        if (r !== undefined) out.set(id, r.generation);
      }
      return out;
    },
    async listActive({ after, limit }) {
      const page = pageOfIds(keys.keys(), after, limit);
      return { records: page.ids.map((id) => active(id) as TokenRecord), next: page.next };
    },
    async pruneBelow(key, generation) {
      const gens = keys.get(keyId(key));
      if (gens === undefined) return 0;
      let n = 0;
      for (const [g, r] of [...gens]) {
        if (g < generation && gens.delete(g)) {
          capacity.removed(recordBytes(r));
          n++;
        }
      }
      return n;
    },
    async unusedSessions(provider, q) {
      const actives = [...keys.keys()].map((id) => active(id));
      return pickUnused(
        actives.flatMap((r) =>
          r?.key.kind === "session"
            ? [
                {
                  provider: r.key.provider,
                  sessionId: r.key.sessionId,
                  generation: r.generation,
                  issuedAt: r.tokens?.issuedAt,
                  hasRefreshToken: r.tokens?.refreshToken !== undefined,
                },
              ]
            : [],
        ),
        provider,
        q,
      );
    },
    async claim(c) {
      return claims.claim(c);
    },
    async releaseClaim(c) {
      return claims.release(c);
    },
    async renewClaim(c, leaseUntil, renewal) {
      return claims.renew(c, leaseUntil, renewal);
    },
    openChangeFeed: () => undefined,
    async sweep(at) {
      const dead = claims.sweep(at);
      for (const r of dead.renewals) await insert(r);
      let generations = 0;
      for (const [id, gens] of keys) {
        const top = active(id)?.generation ?? 0;
        for (const [g, r] of [...gens]) {
          if (g < top && gens.delete(g)) {
            capacity.removed(recordBytes(r));
            generations++;
          }
        }
      }
      for (const [id, revoked] of [...revokedAt]) {
        if (capacity.expired(revoked, at)) {
          generations += keys.get(id)?.size ?? 0;
          removeKey(id);
        }
      }
      return { generations, claims: dead.dead };
    },
    async close() {
      revokedAt.clear();
      keys.clear();
      sessions.clear();
      claims.clear();
    },
  };
}
