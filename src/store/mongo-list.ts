// listActive on MongoDB: every key's highest generation, a page at a time, for export.
//
// One find per page, sorted by the unique index `key_generation` walked backwards (key
// descending, generation descending), so the first document of each key is its highest
// generation and the ones after it are skipped. The cursor is the last key of a page; the next
// page starts below it. No $group (FerretDB v1 lacks it); the sweeper keeps old generations few.

import type { Collection, Document } from "mongodb";
import type { TokenRecord } from "../core/token.ts";
import type { ActivePage, StoreCallOptions } from "../core/token-store.ts";
import type { MongoRun } from "./mongo-command.ts";

export function createListActive(deps: {
  readonly tokens: Collection<Document>;
  readonly run: MongoRun;
  readonly decode: (doc: Document) => TokenRecord;
}) {
  return async (
    page: { readonly after?: string | undefined; readonly limit: number },
    callOpts?: StoreCallOptions,
  ): Promise<ActivePage> => {
    const { after, limit } = page;
    if (!Number.isSafeInteger(limit) || limit <= 0) {
      throw new RangeError(`limit must be a positive integer, got ${limit}`);
    }
    const docs = await deps.run("listActive", callOpts, (signal) =>
      deps.tokens
        .find(after === undefined ? {} : { key: { $lt: after } }, {
          sort: { key: -1, generation: -1 },
          limit,
          batchSize: limit,
          signal,
        })
        .toArray(),
    );
    const records: TokenRecord[] = [];
    let last: string | undefined;
    for (const d of docs) {
      if (d.key === last) continue;
      last = d.key;
      records.push(deps.decode(d));
    }
    return { records, next: docs.length < limit ? undefined : last };
  };
}
