// The unused-session scan of the MongoDB store (TokenStore.unusedSessions): session documents
// of one provider with a refresh token and `issuedAt` before the cut, read in (issuedAt,
// sessionId) order from the index `provider_issued` {provider, issuedAt, sessionId} (created
// here, once, one createIndexes call), then kept only where they are their key's active
// generation (one `$in` query on the `key_generation` index). No token material is read.

import type { Collection, Document } from "mongodb";
import type { StoreCallOptions, UnusedQuery, UnusedSession } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";
import { cursorBefore } from "./unused-sessions.ts";

export const PROVIDER_ISSUED_INDEX = "provider_issued";
/** Pages read per call at most: a scan over many superseded generations stops and resumes. */
const MAX_PAGES = 10;

export function createUnusedSessions(opts: {
  readonly tokens: Collection<Document>;
  readonly run: MongoRun;
}): (provider: string, q: UnusedQuery, o?: StoreCallOptions) => Promise<UnusedSession[]> {
  const { tokens, run } = opts;
  let indexed: Promise<unknown> | undefined;
  return async (provider, q, o) => {
    indexed ??= run("createIndex tokens.provider_issued", o, (signal) =>
      tokens.createIndex(
        { provider: 1, issuedAt: 1, sessionId: 1 },
        withSignal({ name: PROVIDER_ISSUED_INDEX }, signal),
      ),
    ).catch((err: unknown) => {
      indexed = undefined;
      throw err;
    });
    await indexed;
    const out: UnusedSession[] = [];
    let after = q.after;
    for (let page = 0; page < MAX_PAGES && out.length < q.limit; page++) {
      const issued: Document = { $lt: new Date(q.before) };
      if (after !== undefined) issued.$gte = new Date(after.issuedAt);
      const docs = await run("unusedSessions", o, (signal) =>
        tokens
          .find(
            { provider, kind: "session", issuedAt: issued, refreshToken: { $exists: true } },
            {
              projection: { _id: 0, key: 1, sessionId: 1, generation: 1, issuedAt: 1 },
              sort: { issuedAt: 1, sessionId: 1 },
              limit: q.limit + 1,
              signal,
            },
          )
          .toArray(),
      );
      const candidates = docs
        .map((d) => ({
          key: d.key as string,
          sessionId: d.sessionId as string,
          generation: d.generation as number,
          issuedAt: (d.issuedAt as Date).getTime(),
        }))
        .filter((c) => after === undefined || cursorBefore(after, c));
      if (candidates.length === 0) break;
      const keys = [...new Set(candidates.map((c) => c.key))];
      const tops = await run("unusedSessions (active)", o, (signal) =>
        tokens
          .find({ key: { $in: keys } }, { projection: { _id: 0, key: 1, generation: 1 }, signal })
          .toArray(),
      );
      const top = new Map<string, number>();
      for (const d of tops) top.set(d.key, Math.max(top.get(d.key) ?? 0, d.generation as number));
      for (const c of candidates) {
        if (top.get(c.key) === c.generation && out.length < q.limit) {
          out.push({ sessionId: c.sessionId, generation: c.generation, issuedAt: c.issuedAt });
        }
      }
      after = candidates[candidates.length - 1];
      if (docs.length <= q.limit) break;
    }
    return out;
  };
}
