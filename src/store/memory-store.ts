// The embedded default: one process, nothing to install, nothing kept across restarts.

import { keyId, type TokenKey, type TokenRecord } from "../core/token.ts";
import type { InsertResult, KeyGeneration, TokenStore } from "../core/token-store.ts";
import { pageOfIds } from "./active-page.ts";
import { createClaimTable } from "./claim-table.ts";
import { pickUnused } from "./unused-sessions.ts";

export function createMemoryStore(): TokenStore {
  // keyId -> generation -> record
  const keys = new Map<string, Map<number, TokenRecord>>();
  // sessionId -> keyIds of that session, for one-pass session reads
  const sessions = new Map<string, Set<string>>();
  const claims = createClaimTable();

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
    if (gens === undefined) {
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
      for (const g of [...gens.keys()]) if (g < generation && gens.delete(g)) n++;
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
    async sweep(now) {
      const dead = claims.sweep(now);
      for (const r of dead.renewals) await insert(r);
      let generations = 0;
      for (const [id, gens] of keys) {
        const top = active(id)?.generation ?? 0;
        for (const g of [...gens.keys()]) if (g < top && gens.delete(g)) generations++;
      }
      return { generations, claims: dead.dead };
    },
    async close() {
      keys.clear();
      sessions.clear();
      claims.clear();
    },
  };
}
