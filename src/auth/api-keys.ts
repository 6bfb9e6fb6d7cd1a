// API keys for callers outside any identity system. A key reads
// `tvk_<id>_<secret>`: the prefix makes a leaked key easy to find (secret
// scanners), the id picks its entry, the secret is 32 random bytes. Only the
// SHA-256 of the whole key is stored (a keys file or a Secret); a key this
// random needs no slow hash. Hashes are compared in constant time. Each entry
// has an id, an optional expiry, and policy rules name it as api-key:<id>.

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { type Caller, unauthenticated } from "./caller.ts";

export const apiKeyPrefix = "tvk_";
const keyShape = /^tvk_([a-z0-9][a-z0-9-]{0,31})_([A-Za-z0-9_-]{43})$/;
export const apiKeyIdShape = /^[a-z0-9][a-z0-9-]{0,31}$/;

export interface ApiKeyEntry {
  readonly id: string;
  /** SHA-256 of the whole key, hex. */
  readonly sha256: string;
  /** Wall-clock ms after which the key is refused; none: no expiry. */
  readonly expiresAt?: number | undefined;
}

export interface ApiKeys {
  verify(key: string): Omit<Caller, "peer">;
}

export function isApiKey(credential: string): boolean {
  return credential.startsWith(apiKeyPrefix);
}

export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/** A new key and the entry that stores it (what `npm run api-key` prints). */
export function generateApiKey(id: string): { key: string; entry: ApiKeyEntry } {
  if (!apiKeyIdShape.test(id)) {
    throw new RangeError(`an API key id must match ${apiKeyIdShape}; got "${id}"`);
  }
  const key = `${apiKeyPrefix}${id}_${randomBytes(32).toString("base64url")}`;
  return { key, entry: { id, sha256: hashApiKey(key) } };
}

export function createApiKeys(entries: readonly ApiKeyEntry[], now: () => number): ApiKeys {
  const byId = new Map(entries.map((e) => [e.id, Buffer.from(e.sha256, "hex")]));
  const expiry = new Map(entries.map((e) => [e.id, e.expiresAt]));
  return {
    verify(key) {
      const m = keyShape.exec(key);
      if (m === null) throw unauthenticated("MALFORMED_CREDENTIALS", "the API key is malformed");
      const id = m[1] as string;
      const want = byId.get(id);
      const got = createHash("sha256").update(key, "utf8").digest();
      // Compared even for an unknown id, so timing does not tell which ids exist.
      const match = timingSafeEqual(got, want ?? Buffer.alloc(32)) && want !== undefined;
      if (!match) throw unauthenticated("UNKNOWN_API_KEY", "the API key is not a known one");
      const expiresAt = expiry.get(id);
      if (expiresAt !== undefined && now() >= expiresAt) {
        throw unauthenticated("API_KEY_EXPIRED", `API key ${id} has expired`);
      }
      return { id: `api-key:${id}`, method: "api-key", expiresAt };
    },
  };
}
