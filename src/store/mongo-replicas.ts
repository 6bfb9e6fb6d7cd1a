// The replicas of a cluster as the shared database knows them: each running replica records
// itself in the `replicas` collection every heartbeat (ops/replica-heartbeat.ts) with the key ids
// of its keyring and a probe sealed under its primary key, and removes itself when it stops.
// `tokenvend reencrypt` reads the live ones before re-sealing anything: a replica whose primary
// is another key (or the same id with other key material) would keep sealing new documents under
// the old key, or could not read what reencrypt writes.
//
// Not a correctness primitive (DESIGN.md rule 4): a plain upsert per beat; a replica that died
// without removing itself drops out once its last beat is older than the caller's window.

import type { Collection, Document } from "mongodb";
import type { StoreCallOptions, TokenStore } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";
import { type Keyring, SealingError, sealedKeyId } from "./sealing.ts";

export const REPLICAS_COLLECTION = "replicas";

export interface ReplicaInfo {
  readonly id: string;
  /** Host name and pid, for the operator. */
  readonly host: string;
  readonly pid: number;
  readonly startedAt: number;
  readonly seenAt: number;
  readonly primaryKeyId: string;
  readonly keyIds: readonly string[];
  /** A random value sealed under the replica's primary key, bound to its id. */
  readonly probe: string;
}

/** How a replica's primary compares with a keyring's. */
export type PrimaryCheck =
  | { readonly ok: true }
  | { readonly ok: false; readonly why: "other-primary" | "other-material" | "unreadable" };

export interface ReplicaRegistry {
  announce(
    self: Pick<ReplicaInfo, "id" | "host" | "pid" | "startedAt">,
    opts?: StoreCallOptions,
  ): Promise<void>;
  withdraw(id: string, opts?: StoreCallOptions): Promise<void>;
  /** Replicas whose last beat is at most `maxAgeMs` old. */
  live(maxAgeMs: number, opts?: StoreCallOptions): Promise<ReplicaInfo[]>;
  /** Whether `replica` seals under this keyring's primary key (same id, same key material). */
  checkPrimary(replica: ReplicaInfo): PrimaryCheck;
}

const probeAad = (id: string) => `tokenvend-replica#${id}`;

export function createReplicaRegistry(deps: {
  readonly replicas: Collection<Document>;
  readonly run: MongoRun;
  readonly keyring: Keyring;
  readonly now: () => number;
}): ReplicaRegistry {
  const { replicas, run, keyring, now } = deps;
  return {
    async announce(self, opts) {
      const probe = keyring.seal(crypto.randomUUID(), probeAad(self.id));
      await run("replicas (announce)", opts, (signal) =>
        replicas.updateOne(
          { _id: self.id as unknown as Document["_id"] },
          {
            $set: {
              host: self.host,
              pid: self.pid,
              startedAt: new Date(self.startedAt),
              seenAt: new Date(now()),
              primaryKeyId: keyring.primaryId,
              keyIds: [...keyring.ids],
              probe,
            },
          },
          withSignal({ upsert: true }, signal),
        ),
      );
    },
    async withdraw(id, opts) {
      await run("replicas (withdraw)", opts, (signal) =>
        replicas.deleteOne({ _id: id as unknown as Document["_id"] }, withSignal({}, signal)),
      );
    },
    async live(maxAgeMs, opts) {
      const docs = await run("replicas (live)", opts, (signal) =>
        replicas
          .find({ seenAt: { $gte: new Date(now() - maxAgeMs) } }, { sort: { _id: 1 }, signal })
          .toArray(),
      );
      return docs.map((d) => ({
        id: String(d._id),
        host: String(d.host),
        pid: Number(d.pid),
        startedAt: d.startedAt instanceof Date ? d.startedAt.getTime() : 0,
        seenAt: d.seenAt instanceof Date ? d.seenAt.getTime() : 0,
        primaryKeyId: String(d.primaryKeyId),
        keyIds: Array.isArray(d.keyIds) ? d.keyIds.map(String) : [],
        probe: String(d.probe),
      }));
    },
    checkPrimary(replica) {
      try {
        if (sealedKeyId(replica.probe) !== keyring.primaryId)
          return { ok: false, why: "other-primary" };
        keyring.open(replica.probe, probeAad(replica.id));
        return { ok: true };
      } catch (err) {
        if (!(err instanceof SealingError)) throw err;
        return { ok: false, why: err.code === "DECRYPT_FAILED" ? "other-material" : "unreadable" };
      }
    },
  };
}

/** The registry of a store that has one (MongoDB); undefined for the others. */
export function replicaRegistryOf(store: TokenStore): ReplicaRegistry | undefined {
  const r = (store as { replicas?: ReplicaRegistry }).replicas;
  return r;
}
