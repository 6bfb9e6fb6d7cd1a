// Re-sealing the MongoDB store's documents under the keyring's primary key, in pages
// (docs/STORAGE.md, "Rotating a key"). Every document with sealed values is read (by _id, a page
// at a time) and the key id of each value is read from the value itself (./reseal.ts).
//
// Why this is safe without compare-and-swap: a token document is never modified except by this
// rewrite (each renewal inserts a new generation), and the rewrite keeps the plaintext. The update
// is filtered on the document's exact old sealed values, so a document re-sealed meanwhile (by
// another reencrypt) is left alone, and one swept meanwhile matches nothing. Run it only once every
// replica has the new primary (`tokenvend reencrypt` checks the live replicas first): a replica
// with an older primary would seal new documents under the old key.

import type { Collection, Document, ObjectId } from "mongodb";
import type { Logger } from "../core/logger.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";
import {
  createReencryptTally,
  type ReencryptOptions,
  type ReencryptReport,
  resealIfStale,
} from "./reseal.ts";
import { type Keyring, sealedTokenFields } from "./sealing.ts";

export interface ReencryptDeps {
  readonly tokens: Collection<Document>;
  readonly run: MongoRun;
  readonly keyring: Keyring;
  readonly logger: Logger;
  /** Documents per page. */
  readonly pageSize: number;
}

const withSealedValues = { $or: sealedTokenFields.map((f) => ({ [f]: { $exists: true } })) };

/** Re-seals every document with a value sealed under a key other than the primary. */
export async function reencryptTokens(
  deps: ReencryptDeps,
  opts: ReencryptOptions | undefined,
): Promise<ReencryptReport> {
  const { tokens, run, keyring, logger, pageSize } = deps;
  const tally = createReencryptTally();
  let after: ObjectId | undefined;
  for (;;) {
    const filter: Document =
      after === undefined
        ? withSealedValues
        : { $and: [withSealedValues, { _id: { $gt: after } }] };
    const docs = await run("reencrypt (scan)", opts, (signal) =>
      tokens.find(filter, { sort: { _id: 1 }, limit: pageSize, signal }).toArray(),
    );
    for (const d of docs) {
      after = d._id;
      const outcome = resealIfStale(d, keyring);
      if (outcome.kind !== "stale" || opts?.dryRun) {
        tally.add(outcome);
        continue;
      }
      // Only if no other reencrypt re-sealed it first: its sealed values are still the old ones.
      const unchanged: Document = { _id: d._id };
      for (const f of sealedTokenFields) if (typeof d[f] === "string") unchanged[f] = d[f];
      const res = await run("reencrypt (update)", opts, (signal) =>
        tokens.updateOne(unchanged, { $set: outcome.fields }, withSignal({}, signal)),
      );
      tally.add(outcome, res.modifiedCount > 0);
    }
    opts?.onProgress?.(tally.report());
    if (docs.length < pageSize) break;
  }
  const report = tally.report();
  if (Object.keys(report.unreadable).length > 0) {
    logger.error(
      { unreadable: report.unreadable, primary: keyring.primaryId },
      "reencrypt left documents sealed under keys the keyring cannot open",
    );
  }
  logger.info(
    { resealed: report.resealed, dryRun: opts?.dryRun === true, primary: keyring.primaryId },
    "reencrypt done",
  );
  return report;
}
