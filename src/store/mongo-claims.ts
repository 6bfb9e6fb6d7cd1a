// Refresh claims in MongoDB (docs/STORAGE.md, "Claims"): one document per claimed
// (key, generation) in `claims`, under the unique index `key_generation`. An insert acquires a
// claim for exactly one replica; deleteOne on the exact claim (owner and lease) releases it for
// exactly one caller, which is also how a dead holder's claim is taken over. The holder's
// heartbeat moves its lease with an updateOne on the exact claim, and once the provider answered
// it records the renewal (sealed, as a token document) in the claim: a dead claim that carries
// one is finished by storing it, by the sweep here or by a replica that takes it over, never by
// redeeming the spent refresh token again.
//
// An insert that was applied but whose answer was lost (a failover, a dropped connection) and
// is then retried meets its own claim: a holder with this claim's owner and lease is us, and the
// claim is acquired, not lost to a second claim.

import type { Collection, Document, ObjectId } from "mongodb";
import { keyId, type LiveRecord, type TokenKey } from "../core/token.ts";
import type { ClaimResult, RefreshClaim, StoreCallOptions } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";
import { fromMongo, toMongo } from "./mongo-documents.ts";
import { isDuplicateKey } from "./mongo-errors.ts";
import type { Keyring } from "./sealing.ts";
import { StoreError } from "./store-error.ts";
import { keyFields } from "./token-document.ts";

/** How often claim() retries when the holder it lost to vanished before it could be read. */
const CLAIM_ATTEMPTS = 5;

export interface MongoClaimsOptions {
  readonly claims: Collection<Document>;
  readonly run: MongoRun;
  /** Waited for before the first write: the unique index is what makes a claim exclusive. */
  readonly ready: (callOpts?: StoreCallOptions) => Promise<void>;
  readonly keyring: Keyring;
  /** Wall clock for `createdAt`. */
  readonly now: () => number;
  /** Stores a dead claim's renewal as its generation (a sealed token document). */
  readonly finish: (renewal: Document, callOpts?: StoreCallOptions) => Promise<void>;
  /** Claims examined per sweep page, and pages per sweepDead() call. */
  readonly sweepPageSize: number;
  readonly sweepMaxPages: number;
}

export interface MongoClaims {
  claim(c: RefreshClaim, callOpts?: StoreCallOptions): Promise<ClaimResult>;
  releaseClaim(c: RefreshClaim, callOpts?: StoreCallOptions): Promise<boolean>;
  renewClaim(
    c: RefreshClaim,
    leaseUntil: number,
    renewal: LiveRecord | undefined,
    callOpts?: StoreCallOptions,
  ): Promise<RefreshClaim | undefined>;
  /** Deletes claims whose lease ended before `nowMs`, finishing those with a renewal; how many. */
  sweepDead(nowMs: number, callOpts?: StoreCallOptions): Promise<number>;
}

export function createMongoClaims(opts: MongoClaimsOptions): MongoClaims {
  const { claims, run, ready, keyring, now, sweepPageSize, sweepMaxPages } = opts;
  const exact = (c: RefreshClaim) => ({
    key: keyId(c.key),
    generation: c.generation,
    owner: c.owner,
    leaseUntil: new Date(c.leaseUntil),
  });

  return {
    async claim(c, callOpts) {
      if (!Number.isFinite(c.leaseUntil)) throw new TypeError("leaseUntil must be a finite number");
      await ready(callOpts);
      const id = keyId(c.key);
      for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
        const holder = await run("claim", callOpts, async (signal) => {
          try {
            await claims.insertOne(
              {
                ...keyFields(c.key),
                generation: c.generation,
                owner: c.owner,
                leaseUntil: new Date(c.leaseUntil),
                createdAt: new Date(now()),
              },
              withSignal({}, signal),
            );
            return undefined;
          } catch (err) {
            if (!isDuplicateKey(err)) throw err;
          }
          // Local read concern: a holder that later rolls back only makes us wait, which is
          // safe; a majority read could miss a holder whose insert is not majority-committed yet.
          // null when the holder released it (or the sweeper removed it) since our insert.
          return await claims.findOne(
            { key: id, generation: c.generation },
            { signal, readConcern: { level: "local" } },
          );
        });
        if (holder === undefined) return { acquired: true };
        if (holder === null) continue;
        const found = decodeClaim(c.key, holder, keyring);
        // Our own insert, applied once already (a retried write): acquired.
        if (found.owner === c.owner && found.leaseUntil === c.leaseUntil) return { acquired: true };
        return { acquired: false, holder: found };
      }
      throw new StoreError(
        "CONTENDED",
        `claim: lost the insert ${CLAIM_ATTEMPTS} times to holders that were gone when read`,
      );
    },

    async releaseClaim(c, callOpts) {
      const res = await run("releaseClaim", callOpts, (signal) =>
        claims.deleteOne(exact(c), withSignal({}, signal)),
      );
      return res.deletedCount === 1;
    },

    async renewClaim(c, leaseUntil, renewal, callOpts) {
      if (!Number.isFinite(leaseUntil)) throw new TypeError("leaseUntil must be a finite number");
      const set: Document = { leaseUntil: new Date(leaseUntil) };
      if (renewal !== undefined) set.renewal = toMongo(renewal, keyring, now());
      const res = await run("renewClaim", callOpts, (signal) =>
        claims.updateOne(exact(c), { $set: set }, withSignal({}, signal)),
      );
      if (res.matchedCount !== 1) return undefined;
      return { ...c, leaseUntil, ...(renewal !== undefined ? { renewal } : {}) };
    },

    async sweepDead(nowMs, callOpts) {
      let dead = 0;
      const before = new Date(nowMs);
      for (let page = 0; page < sweepMaxPages; page++) {
        const docs = await run("sweep (scan claims)", callOpts, (signal) =>
          claims
            .find(
              { leaseUntil: { $lt: before } },
              {
                projection: { _id: 1, renewal: 1 },
                limit: sweepPageSize,
                batchSize: sweepPageSize,
                signal,
              },
            )
            .toArray(),
        );
        if (docs.length === 0) break;
        // A renewal is stored before its claim goes: the refresh token it replaces is spent.
        for (const d of docs) if (d.renewal !== undefined) await opts.finish(d.renewal, callOpts);
        const res = await run("sweep (delete claims)", callOpts, (signal) =>
          claims.deleteMany(
            { _id: { $in: docs.map((d) => d._id as ObjectId) }, leaseUntil: { $lt: before } },
            withSignal({}, signal),
          ),
        );
        dead += res.deletedCount;
        if (docs.length < sweepPageSize) break;
      }
      return dead;
    },
  };
}

function decodeClaim(key: TokenKey, doc: Document, keyring: Keyring): RefreshClaim {
  const { generation, owner, leaseUntil, renewal } = doc;
  if (
    typeof generation !== "number" ||
    typeof owner !== "string" ||
    !(leaseUntil instanceof Date)
  ) {
    throw new StoreError("CORRUPT", "a stored claim document is malformed");
  }
  const claim: RefreshClaim = { key, generation, owner, leaseUntil: leaseUntil.getTime() };
  if (renewal === undefined || renewal === null) return claim;
  const record = fromMongo(renewal as Document, keyring);
  if (record.reason === "revoked")
    throw new StoreError("CORRUPT", "a claim's renewal is a revocation");
  return { ...claim, renewal: record };
}
