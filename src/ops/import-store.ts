// Import: records (from an export) into any store, idempotently. Per record, against the key's
// active generation in the target store:
//
//   absent or older        the record is inserted at its own generation (it becomes active)
//   the same generation    nothing is written: `present` when the stored one is equal, else
//                          `conflicts` (the store's is kept)
//   newer                  nothing is written (`newer`): a newer generation already there wins
//
// Inserts go through the store's own insert, so a replica that renews the key at the same moment
// either wins the generation (and its token is kept) or loses it; nothing is overwritten. Then the
// verification pass: every inserted record is read back and compared field by field.

import { keyId, type TokenRecord } from "../core/token.ts";
import type { TokenStore } from "../core/token-store.ts";
import { plainRecord } from "./record-json.ts";

export interface ImportReport {
  /** Records read from the input. */
  readonly read: number;
  /** Inserted (in a dry run: that would be). */
  readonly imported: number;
  readonly present: number;
  readonly newer: number;
  readonly conflicts: number;
  /** Inserted records read back equal (0 in a dry run). */
  readonly verified: number;
  /** Keys of inserted records that read back different, as `kind/…` names. */
  readonly mismatched: readonly string[];
}

export interface ImportOptions {
  readonly store: TokenStore;
  readonly dryRun: boolean;
  /** Inserts in flight at once. */
  readonly concurrency: number;
  readonly signal?: AbortSignal | undefined;
  readonly onProgress?: ((report: ImportReport) => void) | undefined;
}

const same = (a: TokenRecord, b: TokenRecord) =>
  JSON.stringify(plainRecord(a)) === JSON.stringify(plainRecord(b));

/** A key as an operator reads it: session/provider/id or grant/name. */
export const keyName = (r: TokenRecord) => keyId(r.key).replaceAll("\u001f", "/");

export async function importRecords(
  chunks: AsyncIterable<readonly TokenRecord[]>,
  opts: ImportOptions,
): Promise<ImportReport> {
  const { store, signal } = opts;
  const callOpts = { signal };
  const r = { read: 0, imported: 0, present: 0, newer: 0, conflicts: 0, verified: 0 };
  const mismatched: string[] = [];
  const report = (): ImportReport => ({ ...r, mismatched: [...mismatched] });

  // A record whose generation is in the store already (or was, when it was read): kept out.
  const settle = (rec: TokenRecord, stored: TokenRecord | undefined) => {
    if (stored !== undefined && stored.generation > rec.generation) r.newer++;
    else if (stored !== undefined && same(stored, rec)) r.present++;
    else r.conflicts++;
  };

  for await (const records of chunks) {
    r.read += records.length;
    const active = await store.activeGenerations(
      records.map((x) => x.key),
      callOpts,
    );
    const toWrite: TokenRecord[] = [];
    for (const rec of records) {
      const gen = active.get(keyId(rec.key));
      if (gen === undefined || gen < rec.generation) toWrite.push(rec);
      else if (gen > rec.generation) r.newer++;
      else settle(rec, await store.getActive(rec.key, callOpts));
    }
    if (opts.dryRun) {
      r.imported += toWrite.length;
    } else {
      await eachLimited(toWrite, opts.concurrency, async (rec) => {
        const res = await store.insert(rec, callOpts);
        if (!res.inserted) {
          settle(rec, res.winner);
          return;
        }
        r.imported++;
        // The verification pass: read back what was written.
        const back = await store.getActive(rec.key, callOpts);
        if (back !== undefined && back.generation > rec.generation) r.verified++;
        else if (back !== undefined && same(back, rec)) r.verified++;
        else mismatched.push(keyName(rec));
      });
    }
    opts.onProgress?.(report());
  }
  return report();
}

/** Runs `fn` over `items`, at most `limit` at a time; the first failure rejects. */
async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
