// The stored form of one generation of a key, shared by the MongoDB and file adapters: the same
// fields and the same sealed token values (times are epoch ms here; MongoDB stores them as BSON
// dates). accessToken, refreshToken, idToken and the session's owner are sealed one by one with
// the document key bound as associated data (`${keyId}#${generation}#${field}`).

import {
  type GenerationReason,
  keyId,
  type TokenKey,
  type TokenRecord,
  type TokenSet,
} from "../core/token.ts";
import {
  type Keyring,
  type SealedTokenField,
  sealedTokenFields,
  tokenFieldAad,
} from "./sealing.ts";
import { StoreError } from "./store-error.ts";

export interface TokenDocument {
  /** keyId(key): the unique index is on (key, generation). */
  key: string;
  kind: "session" | "grant";
  sessionId?: string;
  provider?: string;
  grant?: string;
  generation: number;
  reason: GenerationReason;
  /** The key id every sealed field of this document is sealed under (absent on a revocation). */
  kid?: string;
  accessToken?: string;
  refreshToken?: string;
  idToken?: string;
  /** The session's owner, sealed. */
  owner?: string;
  tokenType?: string;
  scopes?: string[];
  issuedAt?: number;
  expiresAt?: number;
  subject?: string;
  clientId?: string;
  createdAt: number;
}

const reasons: ReadonlySet<string> = new Set<GenerationReason>([
  "stored",
  "refreshed",
  "granted",
  "revoked",
]);

/** The key fields of a document, for filters (no token material). */
export function keyFields(
  key: TokenKey,
): Pick<TokenDocument, "key" | "kind" | "sessionId" | "provider" | "grant"> {
  return key.kind === "session"
    ? { key: keyId(key), kind: "session", sessionId: key.sessionId, provider: key.provider }
    : { key: keyId(key), kind: "grant", grant: key.grant };
}

/** Seals a record under the keyring's primary key. Optional fields that are absent are omitted. */
export function toDocument(
  record: TokenRecord,
  keyring: Keyring,
  createdAt: number,
): TokenDocument {
  const { generation } = record;
  if (!Number.isSafeInteger(generation) || generation < 0) {
    throw new TypeError(`generation must be a non-negative integer, got ${generation}`);
  }
  const doc: TokenDocument = {
    ...keyFields(record.key),
    generation,
    reason: record.reason,
    createdAt,
  };
  if (record.reason === "revoked") return doc;
  const t = record.tokens;
  const id = doc.key;
  for (const [name, v] of [
    ["issuedAt", t.issuedAt],
    ["expiresAt", t.expiresAt],
  ] as const) {
    if (!Number.isFinite(v)) throw new TypeError(`tokens.${name} must be a finite number`);
  }
  doc.kid = keyring.primaryId;
  doc.accessToken = keyring.seal(t.accessToken, tokenFieldAad(id, generation, "accessToken"));
  if (t.refreshToken !== undefined) {
    doc.refreshToken = keyring.seal(t.refreshToken, tokenFieldAad(id, generation, "refreshToken"));
  }
  if (t.idToken !== undefined) {
    doc.idToken = keyring.seal(t.idToken, tokenFieldAad(id, generation, "idToken"));
  }
  if (t.owner !== undefined) {
    doc.owner = keyring.seal(t.owner, tokenFieldAad(id, generation, "owner"));
  }
  doc.tokenType = t.tokenType;
  doc.scopes = [...t.scopes];
  doc.issuedAt = t.issuedAt;
  doc.expiresAt = t.expiresAt;
  if (t.subject !== undefined) doc.subject = t.subject;
  if (t.clientId !== undefined) doc.clientId = t.clientId;
  return doc;
}

const corrupt = (field: string) =>
  new StoreError("CORRUPT", `a stored token document has a missing or malformed "${field}"`);

function str(doc: Record<string, unknown>, field: string): string {
  const v = doc[field];
  if (typeof v !== "string") throw corrupt(field);
  return v;
}

function optStr(doc: Record<string, unknown>, field: string): string | undefined {
  const v = doc[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw corrupt(field);
  return v;
}

function num(doc: Record<string, unknown>, field: string): number {
  const v = doc[field];
  if (typeof v !== "number" || !Number.isFinite(v)) throw corrupt(field);
  return v;
}

/** The key a document belongs to; checks that its `key` field matches. */
export function documentKey(doc: Record<string, unknown>): TokenKey {
  const kind = doc.kind;
  const key: TokenKey =
    kind === "session"
      ? { kind, sessionId: str(doc, "sessionId"), provider: str(doc, "provider") }
      : kind === "grant"
        ? { kind, grant: str(doc, "grant") }
        : (() => {
            throw corrupt("kind");
          })();
  if (doc.key !== keyId(key)) throw corrupt("key");
  return key;
}

/**
 * Opens a document into a record. `doc` is plain data (times already epoch ms). The associated
 * data is rebuilt from the document's own kind/sessionId/provider/grant and generation, so a
 * ciphertext moved to another key, generation or field throws SealingError DECRYPT_FAILED.
 */
export function fromDocument(doc: Record<string, unknown>, keyring: Keyring): TokenRecord {
  const key = documentKey(doc);
  const generation = num(doc, "generation");
  const reason = doc.reason;
  if (typeof reason !== "string" || !reasons.has(reason)) throw corrupt("reason");
  if (reason === "revoked") return { key, generation, reason };
  const id = doc.key as string;
  const open = (field: SealedTokenField, sealed: string | undefined) =>
    sealed === undefined ? undefined : keyring.open(sealed, tokenFieldAad(id, generation, field));
  const scopes = doc.scopes;
  if (!Array.isArray(scopes) || !scopes.every((s) => typeof s === "string")) {
    throw corrupt("scopes");
  }
  let tokens: TokenSet = {
    accessToken: open("accessToken", str(doc, "accessToken")) as string,
    refreshToken: open("refreshToken", optStr(doc, "refreshToken")),
    idToken: open("idToken", optStr(doc, "idToken")),
    tokenType: str(doc, "tokenType"),
    scopes: [...scopes],
    issuedAt: num(doc, "issuedAt"),
    expiresAt: num(doc, "expiresAt"),
    subject: optStr(doc, "subject"),
    clientId: optStr(doc, "clientId"),
  };
  const owner = open("owner", optStr(doc, "owner"));
  if (owner !== undefined) tokens = { ...tokens, owner };
  return { key, generation, reason: reason as Exclude<GenerationReason, "revoked">, tokens };
}

/** Re-seals every sealed field of `doc` under the keyring's primary key (same plaintext). */
export function resealDocument(
  doc: Record<string, unknown>,
  keyring: Keyring,
): Partial<Pick<TokenDocument, "kid" | SealedTokenField>> {
  const id = str(doc, "key");
  const generation = num(doc, "generation");
  const out: Partial<Pick<TokenDocument, "kid" | SealedTokenField>> = { kid: keyring.primaryId };
  for (const field of sealedTokenFields) {
    const sealed = optStr(doc, field);
    if (sealed === undefined) continue;
    const aad = tokenFieldAad(id, generation, field);
    out[field] = keyring.seal(keyring.open(sealed, aad), aad);
  }
  return out;
}
