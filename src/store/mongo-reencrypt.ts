// Re-sealing the MongoDB store's documents under the keyring's primary key, in pages
// (docs/STORAGE.md, "Rotating a key").
//
// Why this is safe without compare-and-swap: a token document is never modified except by this
// rewrite (each renewal inserts a new generation), and the rewrite keeps the plaintext. Two
// replicas re-encrypting the same document both write valid ciphertexts of the same values under
// the primary key, so whichever lands last is right; the filter on the old kid only saves
// repeated work (it need not be atomic, and on FerretDB it is not). A document swept meanwhile
// simply matches nothing. Run it only once every replica has the new primary: a replica with an
// older primary would seal new documents under the old key.

import type { Collection, Document, ObjectId } from "mongodb";
import type { Logger } from "../core/logger.ts";
import type { StoreCallOptions } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";
import { type Keyring, SealingError } from "./sealing.ts";
import { resealDocument } from "./token-document.ts";

export interface ReencryptOptions {
  readonly tokens: Collection<Document>;
  readonly run: MongoRun;
  readonly keyring: Keyring;
  readonly logger: Logger;
  /** Documents per page. */
  readonly pageSize: number;
}

/**
 * Rewrites every document sealed under a key other than the primary; returns how many it
 * rewrote. Documents it cannot open (key not in the ring) are left alone and logged.
 */
export async function reencryptTokens(
  opts: ReencryptOptions,
  callOpts: StoreCallOptions | undefined,
): Promise<number> {
  const { tokens, run, keyring, logger, pageSize } = opts;
  const primary = keyring.primaryId;
  let rewritten = 0;
  let after: ObjectId | undefined;
  const unreadable = new Map<string, number>();
  for (;;) {
    const filter: Document = { kid: { $exists: true, $ne: primary } };
    if (after !== undefined) filter._id = { $gt: after };
    const docs = await run("reencrypt (scan)", callOpts, (signal) =>
      tokens.find(filter, { sort: { _id: 1 }, limit: pageSize, signal }).toArray(),
    );
    for (const d of docs) {
      after = d._id;
      let fields: Document;
      try {
        fields = resealDocument(d, keyring);
      } catch (err) {
        if (!(err instanceof SealingError)) throw err;
        const kid = String(d.kid);
        unreadable.set(kid, (unreadable.get(kid) ?? 0) + 1);
        continue;
      }
      const res = await run("reencrypt (update)", callOpts, (signal) =>
        tokens.updateOne({ _id: d._id, kid: d.kid }, { $set: fields }, withSignal({}, signal)),
      );
      rewritten += res.modifiedCount;
    }
    if (docs.length < pageSize) break;
  }
  if (unreadable.size > 0) {
    logger.error(
      { unreadable: Object.fromEntries(unreadable), primary },
      "reencrypt left documents sealed under keys the keyring cannot open",
    );
  }
  logger.info({ rewritten, primary }, "reencrypt done");
  return rewritten;
}
