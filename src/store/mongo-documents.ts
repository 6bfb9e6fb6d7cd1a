// Token documents as MongoDB holds them: the shared document form (./token-document.ts) with its
// times as BSON dates. Opening one that cannot be opened is an UnreadableRecordError.

import type { Document } from "mongodb";
import type { TokenRecord } from "../core/token.ts";
import type { Keyring } from "./sealing.ts";
import { fromDocument, type TokenDocument, toDocument } from "./token-document.ts";
import { openOrUnreadable } from "./unreadable.ts";

const TIMES = ["issuedAt", "expiresAt", "createdAt"] as const;

/** Seals `record` into the document MongoDB stores. */
export function toMongo(record: TokenRecord, keyring: Keyring, createdAt: number): Document {
  const doc: TokenDocument = toDocument(record, keyring, createdAt);
  const out: Document = { ...doc };
  for (const f of TIMES) if (doc[f] !== undefined) out[f] = new Date(doc[f]);
  return out;
}

/** Opens a stored document. */
export function fromMongo(doc: Document, keyring: Keyring): TokenRecord {
  const plain: Record<string, unknown> = { ...doc };
  for (const f of TIMES) {
    const v = plain[f];
    if (v instanceof Date) plain[f] = v.getTime();
  }
  return openOrUnreadable(() => fromDocument(plain, keyring));
}

/** The document of the highest generation of each key among `docs` (reduced here: FerretDB v1 has no $group). */
export function highestPerKey(docs: readonly Document[]): Document[] {
  const top = new Map<string, Document>();
  for (const d of docs) {
    const best = top.get(d.key);
    if (best === undefined || d.generation > best.generation) top.set(d.key, d);
  }
  return [...top.values()];
}
