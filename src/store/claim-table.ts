// Refresh claims held in this process's memory, for the adapters whose one process is the only
// claimer: the memory store, and the file store (one process per directory; a claim that
// survived a crash would only hold the next refresh back until its lease ran out, so none is
// written to disk). Same rules as the MongoDB claims: one holder per (key, generation); only the
// exact holder (owner and lease) releases, once.

import { keyId } from "../core/token.ts";
import type { ClaimResult, RefreshClaim } from "../core/token-store.ts";

export interface ClaimTable {
  claim(c: RefreshClaim): ClaimResult;
  release(c: RefreshClaim): boolean;
  /** Deletes the claims whose lease ended before `nowMs`; returns how many. */
  sweep(nowMs: number): number;
  clear(): void;
}

export function createClaimTable(): ClaimTable {
  // `${keyId}#${generation}` -> claim
  const claims = new Map<string, RefreshClaim>();
  const claimId = (c: RefreshClaim) => `${keyId(c.key)}#${c.generation}`;
  return {
    claim(c) {
      const holder = claims.get(claimId(c));
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
      const holder = claims.get(claimId(c));
      if (holder === undefined || holder.owner !== c.owner || holder.leaseUntil !== c.leaseUntil)
        return false;
      return claims.delete(claimId(c));
    },
    sweep(nowMs) {
      let dead = 0;
      for (const [id, c] of claims) if (c.leaseUntil < nowMs && claims.delete(id)) dead++;
      return dead;
    },
    clear() {
      claims.clear();
    },
  };
}
