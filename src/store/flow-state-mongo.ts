// The MongoDB adapter of the FlowStateStore port: collection `flows` (with the store's prefix),
// one document per record with the record id as `_id`, so `create` is an insert against the
// always-unique `_id` index and `remove` is deleteOne's deletedCount, the portable primitives
// (DESIGN.md rule 4). Index `expires_at` {expiresAt: 1} serves the sweep. Secrets are sealed
// (./flow-state-document.ts). Commands run through the token store's runner (./mongo-command.ts).

import type { Collection, Document, MongoClient } from "mongodb";
import { abandonWait } from "../core/abandon-wait.ts";
import type { FlowRecord, FlowStateStore } from "../core/flow-state-store.ts";
import type { StoreCallOptions } from "../core/token-store.ts";
import { fromFlowDocument, toFlowDocument } from "./flow-state-document.ts";
import { MAJORITY, storeClient } from "./mongo-client.ts";
import { createMongoRun, withSignal } from "./mongo-command.ts";
import { isDuplicateKey } from "./mongo-errors.ts";
import type { Keyring } from "./sealing.ts";

export const FLOWS_COLLECTION = "flows";
export const EXPIRES_INDEX = "expires_at";

export function createMongoFlowStates(opts: {
  /** A client (not closed by close()) or a connection string (owned, closed by close()). */
  readonly client: MongoClient | string;
  readonly dbName: string;
  readonly keyring: Keyring;
  readonly collectionPrefix?: string;
  readonly operationTimeoutMs?: number;
}): FlowStateStore {
  const { client, owned } = storeClient(opts.client, undefined);
  const col: Collection<Document> = client
    .db(opts.dbName)
    .collection(`${opts.collectionPrefix ?? ""}${FLOWS_COLLECTION}`, MAJORITY);
  let closed = false;
  const run = createMongoRun(
    opts.operationTimeoutMs ?? 10_000,
    () => closed,
    () => client.connect(),
  );
  let indexed: Promise<void> | undefined;
  const ensureIndex = (o: StoreCallOptions | undefined) => {
    indexed ??= run("createIndex flows.expires_at", undefined, (signal) =>
      col.createIndex({ expiresAt: 1 }, withSignal({ name: EXPIRES_INDEX }, signal)),
    ).then(
      () => {},
      (err: unknown) => {
        indexed = undefined;
        throw err;
      },
    );
    return abandonWait(indexed, o?.signal);
  };
  const toMongo = (r: FlowRecord): Document => {
    const { id, expiresAt, ...rest } = toFlowDocument(r, opts.keyring);
    return { _id: id, expiresAt: new Date(expiresAt), ...rest } as Document;
  };
  const decode = (d: Document): FlowRecord =>
    fromFlowDocument(
      {
        ...d,
        id: d._id,
        expiresAt: d.expiresAt instanceof Date ? d.expiresAt.getTime() : d.expiresAt,
      },
      opts.keyring,
    );

  return {
    kind: "mongo",
    async create(r, o) {
      await ensureIndex(o);
      return run("flows create", o, async (signal) => {
        try {
          await col.insertOne(toMongo(r), withSignal({}, signal));
          return true;
        } catch (err) {
          if (isDuplicateKey(err)) return false;
          throw err;
        }
      });
    },
    async get(id, o) {
      const d = await run("flows get", o, (signal) =>
        col.findOne({ _id: id as never }, { signal }),
      );
      return d === null ? undefined : decode(d);
    },
    async replace(r, o) {
      const res = await run("flows replace", o, (signal) =>
        col.replaceOne({ _id: r.id as never }, toMongo(r), withSignal({}, signal)),
      );
      return res.matchedCount === 1;
    },
    async remove(id, o) {
      const res = await run("flows remove", o, (signal) =>
        col.deleteOne({ _id: id as never }, withSignal({}, signal)),
      );
      return res.deletedCount === 1;
    },
    async sweep(now, o) {
      const res = await run("flows sweep", o, (signal) =>
        col.deleteMany({ expiresAt: { $lt: new Date(now) } }, withSignal({}, signal)),
      );
      return res.deletedCount;
    },
    async close() {
      if (closed) return;
      closed = true;
      if (owned) await client.close();
    },
  };
}
