// Sweeping old generations from MongoDB in bounded work per call. The sweeper walks the tokens
// in (key asc, generation desc) order: the first document of a key is its highest generation,
// and every later one of the same key is older and goes. It keeps its position between calls
// (its own state, nobody else's), so each call does at most `maxPages` pages and successive
// calls cover everything. Only _id, key and generation are fetched; nothing is opened.

import type { Collection, Document, ObjectId } from "mongodb";
import type { StoreCallOptions } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";

export interface GenerationSweepOptions {
  readonly tokens: Collection<Document>;
  readonly run: MongoRun;
  /** Documents examined per page, and pages per call. */
  readonly pageSize: number;
  readonly maxPages: number;
}

/** One sweep step: deletes old generations it passes and returns how many. */
export function createGenerationSweep(
  opts: GenerationSweepOptions,
): (callOpts?: StoreCallOptions) => Promise<number> {
  const { tokens, run, pageSize, maxPages } = opts;
  let sweepFrom: { key: string; generation: number } | undefined;
  return async (callOpts) => {
    let generations = 0;
    for (let page = 0; page < maxPages; page++) {
      const from = sweepFrom;
      const docs = await run("sweep (scan tokens)", callOpts, (signal) =>
        tokens
          .find(
            from === undefined
              ? {}
              : {
                  $or: [
                    { key: { $gt: from.key } },
                    { key: from.key, generation: { $lt: from.generation } },
                  ],
                },
            {
              projection: { _id: 1, key: 1, generation: 1 },
              sort: { key: 1, generation: -1 },
              limit: pageSize,
              batchSize: pageSize,
              signal,
            },
          )
          .toArray(),
      );
      const old: ObjectId[] = [];
      let last = from;
      for (const d of docs) {
        if (last !== undefined && d.key === last.key) old.push(d._id);
        last = { key: d.key, generation: d.generation };
      }
      sweepFrom = docs.length < pageSize ? undefined : last;
      if (old.length > 0) {
        const res = await run("sweep (delete generations)", callOpts, (signal) =>
          tokens.deleteMany({ _id: { $in: old } }, withSignal({}, signal)),
        );
        generations += res.deletedCount;
      }
      if (sweepFrom === undefined) break;
    }
    return generations;
  };
}
