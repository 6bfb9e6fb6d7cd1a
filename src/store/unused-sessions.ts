// The unused-session scan of the adapters that hold every key in this process's memory (the
// memory and file stores): one pass over the active generations, filtered and ordered as the
// port says. MongoDB answers the same question from an index (./mongo-unused.ts).

import type { UnusedCursor, UnusedQuery, UnusedSession } from "../core/token-store.ts";

export interface ActiveSession {
  readonly provider: string;
  readonly sessionId: string;
  readonly generation: number;
  /** Undefined for a revocation. */
  readonly issuedAt: number | undefined;
  readonly hasRefreshToken: boolean;
}

/** a < b in (issuedAt, sessionId) order. */
export function cursorBefore(a: UnusedCursor, b: UnusedCursor): boolean {
  return a.issuedAt < b.issuedAt || (a.issuedAt === b.issuedAt && a.sessionId < b.sessionId);
}

export function pickUnused(
  actives: Iterable<ActiveSession>,
  provider: string,
  q: UnusedQuery,
): UnusedSession[] {
  const out: UnusedSession[] = [];
  for (const a of actives) {
    if (a.provider !== provider || !a.hasRefreshToken || a.issuedAt === undefined) continue;
    if (a.issuedAt >= q.before) continue;
    const s = { sessionId: a.sessionId, issuedAt: a.issuedAt, generation: a.generation };
    if (q.after !== undefined && !cursorBefore(q.after, s)) continue;
    out.push(s);
  }
  out.sort((a, b) => (cursorBefore(a, b) ? -1 : cursorBefore(b, a) ? 1 : 0));
  return out.slice(0, q.limit);
}
