// The portable change log, for servers without change streams (FerretDB): every new generation
// is announced by a small record (key, generation, reason, `at` on the writer's clock) in the
// `changes` collection, written BEFORE the generation itself, so no crash can leave a generation
// nobody hears of (a record whose generation never lands costs readers one read, nothing more).
//
// A reader asks for the records at or after its previous read's time minus `marginMs` (writers'
// clock skew, write latency, and the gap between a record and its generation), so it sees each
// record several times and de-duplicates by generation. The service prunes the log itself
// (`sweep`): records older than `retentionMs` go. A reader whose previous read is older than the window the log
// still holds reports a gap: its replica re-checks every cached key once.
//
// FerretDB scans the collection for these queries (it pushes only equality down), which is why
// the log is kept to the window and nothing more.

import type { Collection, Document } from "mongodb";
import { keyId, type TokenRecord } from "../core/token.ts";
import type { ChangeBatch, StoreCallOptions, StoreChange } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";

export interface ChangeLogOptions {
  readonly changes: Collection<Document>;
  readonly run: MongoRun;
  /** Wall clock (the writer's `at`, the reader's window). */
  readonly now: () => number;
  readonly marginMs: number;
  readonly retentionMs: number;
}

export interface ChangeLog {
  /** Announces `record`'s generation; before the generation is written. */
  announce(record: TokenRecord, callOpts?: StoreCallOptions): Promise<void>;
  /** A reader of the log, starting now (minus the margin). */
  reader(): (callOpts?: StoreCallOptions) => Promise<ChangeBatch>;
  /** Deletes the records past the retention. */
  sweep(callOpts?: StoreCallOptions): Promise<void>;
}

const REASONS = new Set(["stored", "refreshed", "granted", "revoked"]);

export function createChangeLog(opts: ChangeLogOptions): ChangeLog {
  const { changes, run, now, marginMs, retentionMs } = opts;
  return {
    async announce(record, callOpts) {
      await run("announce", callOpts, (signal) =>
        changes.insertOne(
          {
            key: keyId(record.key),
            generation: record.generation,
            reason: record.reason,
            at: new Date(now()),
          },
          withSignal({}, signal),
        ),
      );
    },

    reader() {
      let from = now() - marginMs;
      return async (callOpts) => {
        const startedAt = now();
        // The log holds at least [now - retention, now]: older than that, records may be gone.
        const gap = from < startedAt - retentionMs + marginMs;
        const docs = await run("changes", callOpts, (signal) =>
          changes
            .find(
              { at: { $gte: new Date(gap ? startedAt - retentionMs + marginMs : from) } },
              { projection: { _id: 0, key: 1, generation: 1, reason: 1 }, signal },
            )
            .toArray(),
        );
        from = startedAt - marginMs;
        const out: StoreChange[] = [];
        for (const d of docs) {
          if (typeof d.key !== "string" || typeof d.generation !== "number") continue;
          if (typeof d.reason !== "string" || !REASONS.has(d.reason)) continue;
          out.push({
            id: d.key,
            generation: d.generation,
            reason: d.reason as StoreChange["reason"],
          });
        }
        return { changes: out, gap };
      };
    },

    async sweep(callOpts) {
      await run("sweep (delete changes)", callOpts, (signal) =>
        changes.deleteMany({ at: { $lt: new Date(now() - retentionMs) } }, withSignal({}, signal)),
      );
    },
  };
}
