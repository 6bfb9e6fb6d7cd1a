// Re-sealing under the keyring's primary key (`tokenvend reencrypt`), shared by the MongoDB and
// file adapters. Which key sealed a document is read from each of its sealed values (their
// `v1:<kid>:` header), not from the document's plaintext `kid` field: a value is re-sealed when
// it is sealed under any key but the primary, whatever the field beside it says.

import type { StoreCallOptions } from "../core/token-store.ts";
import { type Keyring, SealingError, sealedKeyId, sealedTokenFields } from "./sealing.ts";
import { resealDocument } from "./token-document.ts";

export interface ReencryptOptions extends StoreCallOptions {
  /** Count what would be re-sealed; write nothing. */
  readonly dryRun?: boolean | undefined;
  /** Called after each page (MongoDB) or once (file) with the report so far. */
  readonly onProgress?: ((report: ReencryptReport) => void) | undefined;
}

export interface ReencryptReport {
  /** Documents with sealed values looked at. */
  readonly scanned: number;
  /** Documents re-sealed under the primary (in a dry run: that would be). */
  readonly resealed: number;
  /** Re-sealed documents by the key id(s) their values were sealed under. */
  readonly fromKeys: Readonly<Record<string, number>>;
  /** Documents that do not open with this keyring, by key id ("malformed": not a sealed value). */
  readonly unreadable: Readonly<Record<string, number>>;
}

export type ResealOutcome =
  | { readonly kind: "current" }
  | { readonly kind: "stale"; readonly fields: Record<string, string>; readonly from: string[] }
  | { readonly kind: "unreadable"; readonly keyIds: string[] };

/** Whether `doc` (plain data) needs re-sealing, and its re-sealed fields when it does. */
export function resealIfStale(doc: Record<string, unknown>, keyring: Keyring): ResealOutcome {
  const from = new Set<string>();
  for (const f of sealedTokenFields) {
    const v = doc[f];
    if (typeof v !== "string") continue;
    let kid: string;
    try {
      kid = sealedKeyId(v);
    } catch {
      return { kind: "unreadable", keyIds: ["malformed"] };
    }
    if (kid !== keyring.primaryId) from.add(kid);
  }
  if (from.size === 0) return { kind: "current" };
  try {
    return { kind: "stale", fields: resealDocument(doc, keyring), from: [...from].sort() };
  } catch (err) {
    if (!(err instanceof SealingError)) throw err;
    return { kind: "unreadable", keyIds: [...from].sort() };
  }
}

/** Counts outcomes into a report. */
export function createReencryptTally() {
  let scanned = 0;
  let resealed = 0;
  const fromKeys: Record<string, number> = {};
  const unreadable: Record<string, number> = {};
  const bump = (into: Record<string, number>, ids: readonly string[]) => {
    const id = ids.join("+");
    into[id] = (into[id] ?? 0) + 1;
  };
  return {
    add(outcome: ResealOutcome, written = true): void {
      scanned++;
      if (outcome.kind === "unreadable") bump(unreadable, outcome.keyIds);
      else if (outcome.kind === "stale" && written) {
        resealed++;
        bump(fromKeys, outcome.from);
      }
    },
    report(): ReencryptReport {
      return { scanned, resealed, fromKeys: { ...fromKeys }, unreadable: { ...unreadable } };
    },
  };
}

/** Whether any sealed value of `doc` is present: revocations have none and are not scanned. */
export function hasSealedValues(doc: Record<string, unknown>): boolean {
  return sealedTokenFields.some((f) => typeof doc[f] === "string");
}
