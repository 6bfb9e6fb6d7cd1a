// Refresh claims held in this process's memory, for the adapters whose one process is the only
// claimer: the memory store, and the file store (one process per directory; a claim that
// survived a crash would only hold the next refresh back until its lease ran out, so none is
// written to disk). Same rules as the MongoDB claims: one holder per (key, generation); only the
// exact holder (owner and lease) releases or renews it, once.

import { keyId, type LiveRecord } from "../core/token.ts";
import type { ClaimResult, RefreshClaim } from "../core/token-store.ts";

export interface ClaimTable {
  claim(c: RefreshClaim): ClaimResult;
  release(c: RefreshClaim): boolean;
  renew(
    c: RefreshClaim,
    leaseUntil: number,
    renewal: LiveRecord | undefined,
  ): RefreshClaim | undefined;
  /**
   * Deletes the claims whose lease ended before `nowMs`; returns how many, and the renewals the
   * dead ones carried (the caller stores them: the refresh tokens they replace are spent).
   */
  sweep(nowMs: number): { dead: number; renewals: LiveRecord[] };
  clear(): void;
}

export function createClaimTable(): ClaimTable {
  // `${keyId}#${generation}` -> claim
  const claims = new Map<string, RefreshClaim>();
  const claimId = (c: RefreshClaim) => `${keyId(c.key)}#${c.generation}`;
  const held = (c: RefreshClaim) => {
    const holder = claims.get(claimId(c));
    return holder?.owner === c.owner && holder.leaseUntil === c.leaseUntil;
  };
  return {
    claim(c) {
      const holder = claims.get(claimId(c));
      // The same claim again (a retried call): still acquired, as the MongoDB claims answer.
      if (holder !== undefined && held(c)) return { acquired: true };
      if (holder !== undefined) return { acquired: false, holder };
      claims.set(claimId(c), {
        key: c.key,
        generation: c.generation,
        owner: c.owner,
        leaseUntil: c.leaseUntil,
      });
      return { acquired: true };
    },
    release(c) {
      return held(c) && claims.delete(claimId(c));
    },
    renew(c, leaseUntil, renewal) {
      const holder = claims.get(claimId(c));
      if (holder === undefined || !held(c)) return undefined;
      const renewed = { ...holder, leaseUntil, ...(renewal !== undefined ? { renewal } : {}) };
      claims.set(claimId(c), renewed);
      return renewed;
    },
    sweep(nowMs) {
      let dead = 0;
      const renewals: LiveRecord[] = [];
      for (const [id, c] of claims) {
        if (c.leaseUntil >= nowMs || !claims.delete(id)) continue;
        dead++;
        if (c.renewal !== undefined) renewals.push(c.renewal);
      }
      return { dead, renewals };
    },
    clear() {
      claims.clear();
    },
  };
}
