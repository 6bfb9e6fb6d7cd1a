// A TokenRecord read back from JSON (an export, a bootstrap file): the fields every record must
// have are checked, and every other field is kept as it is, so what a later version adds to the
// record (an owner, a tenant) passes through export and import untouched.

import { keyId, type TokenKey, type TokenRecord } from "../core/token.ts";

export class RecordFormatError extends Error {
  override readonly name = "RecordFormatError";
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function need(cond: boolean, where: string, what: string): asserts cond {
  if (!cond) throw new RecordFormatError(`${where}: ${what}`);
}

const optString = (v: unknown) => v === undefined || typeof v === "string";

function parseKey(v: unknown, where: string): TokenKey {
  need(isObj(v), where, "key must be an object");
  if (v.kind === "session") {
    need(
      typeof v.sessionId === "string" && v.sessionId !== "" && typeof v.provider === "string",
      where,
      "a session key needs sessionId and provider",
    );
  } else {
    need(v.kind === "grant", where, 'key.kind must be "session" or "grant"');
    need(typeof v.grant === "string" && v.grant !== "", where, "a grant key needs grant");
  }
  return v as unknown as TokenKey;
}

/** Checks the shape of one record; throws RecordFormatError naming `where` and the field. */
export function parseRecord(v: unknown, where: string): TokenRecord {
  need(isObj(v), where, "a record must be an object");
  const key = parseKey(v.key, where);
  need(
    Number.isSafeInteger(v.generation) && (v.generation as number) >= 0,
    where,
    "generation must be a non-negative integer",
  );
  const reasons = ["stored", "refreshed", "granted", "revoked"];
  need(typeof v.reason === "string" && reasons.includes(v.reason), where, "reason is unknown");
  const at = `${where} (${keyId(key).replaceAll("\u001f", "/")})`;
  if (v.reason === "revoked") {
    need(v.tokens === undefined, at, "a revocation carries no tokens");
    return v as unknown as TokenRecord;
  }
  const t = v.tokens;
  need(isObj(t), at, "tokens must be an object");
  need(typeof t.accessToken === "string", at, "tokens.accessToken must be a string");
  need(typeof t.tokenType === "string", at, "tokens.tokenType must be a string");
  need(
    Array.isArray(t.scopes) && t.scopes.every((s) => typeof s === "string"),
    at,
    "tokens.scopes must be a list of strings",
  );
  for (const f of ["issuedAt", "expiresAt"]) {
    need(Number.isFinite(t[f]), at, `tokens.${f} must be a number (epoch ms)`);
  }
  for (const f of ["refreshToken", "idToken", "subject", "clientId"]) {
    need(optString(t[f]), at, `tokens.${f} must be a string when present`);
  }
  return v as unknown as TokenRecord;
}

/** A record as plain JSON data: fields that are undefined are left out, as JSON does. */
export function plainRecord(r: TokenRecord): unknown {
  return JSON.parse(JSON.stringify(r));
}
