// The indexes the MongoDB store's correctness rests on, created once per store and shared by
// every caller that needs them; a caller's abort only ends its own wait. One index per
// createIndexes command: the portable way (DESIGN.md, "Storage and concurrency", rule 4).
// Creating an index that exists is a no-op, so every replica may do it.

import type { Collection, Document } from "mongodb";
import { abandonWait } from "../core/abandon-wait.ts";
import type { Logger } from "../core/logger.ts";
import type { StoreCallOptions } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";

/** Unique on both collections: exactly one writer creates a generation, one replica claims it. */
export const KEY_GENERATION_INDEX = "key_generation";
/** On tokens: getSession's one query. */
export const SESSION_INDEX = "session_id";
/** On changes: a reader's window (MongoDB uses it; FerretDB scans the small log anyway). */
export const CHANGE_TIME_INDEX = "at";

export interface IndexesOptions {
  readonly tokens: Collection<Document>;
  readonly claims: Collection<Document>;
  readonly changes: Collection<Document>;
  readonly run: MongoRun;
  readonly logger: Logger;
  /** For the log line. */
  readonly dbName: string;
  readonly prefix: string;
}

// FerretDB answers InternalError (code 1) when PostgreSQL refuses DDL that raced with other DDL
// on its catalogs (another database's collections and indexes being created at the same time):
// gone on a second try.
const ddlAttempts = 3;
const isBackendConflict = (err: unknown) =>
  ((err as { cause?: { code?: unknown } }).cause?.code ?? undefined) === 1;

/** ensureIndexes(): runs once (again after a failure); later calls wait for that one run. */
export function createEnsureIndexes(
  opts: IndexesOptions,
): (callOpts?: StoreCallOptions) => Promise<void> {
  const { tokens, claims, changes, run, logger } = opts;
  let indexes: Promise<void> | undefined;
  return (callOpts) => {
    indexes ??= (async () => {
      const specs = [
        [tokens, { key: 1, generation: 1 }, { name: KEY_GENERATION_INDEX, unique: true }],
        [tokens, { sessionId: 1 }, { name: SESSION_INDEX }],
        [claims, { key: 1, generation: 1 }, { name: KEY_GENERATION_INDEX, unique: true }],
        [changes, { at: 1 }, { name: CHANGE_TIME_INDEX, unique: false }],
      ] as const;
      for (const [col, spec, options] of specs) {
        for (let attempt = 1; ; attempt++) {
          try {
            await run(`createIndex ${col.collectionName}.${options.name}`, undefined, (signal) =>
              col.createIndex(spec, withSignal({ ...options }, signal)),
            );
            break;
          } catch (err) {
            if (attempt >= ddlAttempts || !isBackendConflict(err)) throw err;
            await new Promise((r) => setTimeout(r, 100 * attempt));
          }
        }
      }
      logger.debug({ db: opts.dbName, prefix: opts.prefix }, "mongo store indexes ensured");
    })().catch((err: unknown) => {
      indexes = undefined; // the next write tries again
      throw err;
    });
    return abandonWait(indexes, callOpts?.signal);
  };
}
