// Refresh claims in MongoDB (docs/STORAGE.md, "Claims"): one document per claimed
// (key, generation) in `claims`, under the unique index `key_generation`. An insert acquires a
// claim for exactly one replica; deleteOne on the exact claim (owner and lease) releases it for
// exactly one caller, which is also how a dead holder's claim is taken over. Dead claims are
// swept here too, in bounded pages.

import type { Collection, Document, ObjectId } from "mongodb";
import { keyId, type TokenKey } from "../core/token.ts";
import type { ClaimResult, RefreshClaim, StoreCallOptions } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";
import { isDuplicateKey } from "./mongo-errors.ts";
import { StoreError } from "./store-error.ts";
import { keyFields } from "./token-document.ts";

/** How often claim() retries when the holder it lost to vanished before it could be read. */
const CLAIM_ATTEMPTS = 5;

export interface MongoClaimsOptions {
  readonly claims: Collection<Document>;
  readonly run: MongoRun;
  /** Waited for before the first insert: the unique index is what makes a claim exclusive. */
  readonly ensureIndexes: (callOpts?: StoreCallOptions) => Promise<void>;
  /** Wall clock for `createdAt`. */
  readonly now: () => number;
  /** Claims examined per sweep page, and pages per sweepDead() call. */
  readonly sweepPageSize: number;
  readonly sweepMaxPages: number;
}

export interface MongoClaims {
  claim(c: RefreshClaim, callOpts?: StoreCallOptions): Promise<ClaimResult>;
  releaseClaim(c: RefreshClaim, callOpts?: StoreCallOptions): Promise<boolean>;
  /** Deletes claims whose lease ended before `nowMs`; returns how many. */
  sweepDead(nowMs: number, callOpts?: StoreCallOptions): Promise<number>;
}

export function createMongoClaims(opts: MongoClaimsOptions): MongoClaims {
  const { claims, run, ensureIndexes, now, sweepPageSize, sweepMaxPages } = opts;
  return {
    async claim(c, callOpts) {
      if (!Number.isFinite(c.leaseUntil)) throw new TypeError("leaseUntil must be a finite number");
      await ensureIndexes(callOpts);
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
          // null when the holder released it (or the sweeper removed it) since our insert.
          return await claims.findOne({ key: id, generation: c.generation }, { signal });
        });
        if (holder === undefined) return { acquired: true };
        if (holder !== null) return { acquired: false, holder: decodeClaim(c.key, holder) };
      }
      throw new StoreError(
        "CONTENDED",
        `claim: lost the insert ${CLAIM_ATTEMPTS} times to holders that were gone when read`,
      );
    },

    async releaseClaim(c, callOpts) {
      const res = await run("releaseClaim", callOpts, (signal) =>
        claims.deleteOne(
          {
            key: keyId(c.key),
            generation: c.generation,
            owner: c.owner,
            leaseUntil: new Date(c.leaseUntil),
          },
          withSignal({}, signal),
        ),
      );
      return res.deletedCount === 1;
    },

    async sweepDead(nowMs, callOpts) {
      let dead = 0;
      const before = new Date(nowMs);
      for (let page = 0; page < sweepMaxPages; page++) {
        const ids = await run("sweep (scan claims)", callOpts, async (signal) =>
          (
            await claims
              .find(
                { leaseUntil: { $lt: before } },
                { projection: { _id: 1 }, limit: sweepPageSize, batchSize: sweepPageSize, signal },
              )
              .toArray()
          ).map((d) => d._id as ObjectId),
        );
        if (ids.length === 0) break;
        const res = await run("sweep (delete claims)", callOpts, (signal) =>
          claims.deleteMany(
            { _id: { $in: ids }, leaseUntil: { $lt: before } },
            withSignal({}, signal),
          ),
        );
        dead += res.deletedCount;
        if (ids.length < sweepPageSize) break;
      }
      return dead;
    },
  };
}

function decodeClaim(key: TokenKey, doc: Document): RefreshClaim {
  const { generation, owner, leaseUntil } = doc;
  if (
    typeof generation !== "number" ||
    typeof owner !== "string" ||
    !(leaseUntil instanceof Date)
  ) {
    throw new StoreError("CORRUPT", "a stored claim document is malformed");
  }
  return { key, generation, owner, leaseUntil: leaseUntil.getTime() };
}
