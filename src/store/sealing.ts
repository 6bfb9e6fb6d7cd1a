// Encryption at rest: AES-256-GCM under a keyring. The first key seals, every key opens, so a
// new key can be rolled out before it becomes the primary and an old one kept until nothing is
// sealed under it any more (see docs/STORAGE.md, "Key rotation").
//
// A sealed value is one ASCII string, the same in MongoDB and in the file store:
//
//     v1:<kid>:<iv>:<ciphertext+tag>        iv: 12 bytes, tag: 16 bytes, both base64url
//
// The caller's associated data (for tokens: `${keyId}#${generation}#${field}`) is bound into the
// tag, after the `v1:<kid>:` header, so a value copied into another document or field, or under
// another key id, does not open. Nothing here ever puts key material or plaintext in an error.

import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  type KeyObject,
  randomBytes,
} from "node:crypto";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";

export const sealingErrorCodes = [
  /** A key in the configuration is malformed (wrong length, bad id, duplicate, none at all). */
  "INVALID_KEY",
  /** The value was sealed under a key id the keyring does not have. */
  "KEY_NOT_FOUND",
  /** The key id is known but the value does not open: other key material, altered or moved. */
  "DECRYPT_FAILED",
  /** The value is not a sealed value of a format this version reads. */
  "MALFORMED",
  /** A key id's material is not the one the store recorded for it (the key check at start). */
  "KEY_MISMATCH",
] as const;

export type SealingErrorCode = (typeof sealingErrorCodes)[number];

export class SealingError extends Error {
  override readonly name = "SealingError";
  readonly code: SealingErrorCode;

  constructor(code: SealingErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.code = code;
  }
}

export interface KeyringKey {
  /** Key id stored beside every value it seals: 1–64 of `A-Z a-z 0-9 . _ -`. */
  readonly id: string;
  /** 32 random bytes. */
  readonly key: Uint8Array;
}

export interface Keyring {
  /** The id of the key that seals (the first one given). */
  readonly primaryId: string;
  /** Every key id, primary first. */
  readonly ids: readonly string[];
  has(id: string): boolean;
  /** Seals under the primary key. */
  seal(plaintext: string, aad: string): string;
  /** Opens a value sealed under any key of the ring, with the same associated data. */
  open(sealed: string, aad: string): string;
  /**
   * A check value of key `id` (HMAC-SHA256 of a fixed label, base64url): the same for the same
   * key material, and telling nothing about it. Stores record it per key id at first use.
   */
  checkValue(id: string): string;
}

const FORMAT = "v1";
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const KID = /^[A-Za-z0-9._-]{1,64}$/;
const B64URL = /^[A-Za-z0-9_-]*$/;

/** How to make a key, for error messages and docs. */
export const KEY_HOWTO =
  "make one with `openssl rand -base64 32` or " +
  "`node -e \"console.log(require('crypto').randomBytes(32).toString('base64'))\"`";

/** A new random key, base64: what `openssl rand -base64 32` prints. */
export function generateKey(): string {
  return randomBytes(KEY_BYTES).toString("base64");
}

export function createKeyring(keys: readonly KeyringKey[]): Keyring {
  if (keys.length === 0) {
    throw new SealingError("INVALID_KEY", `the keyring has no keys; ${KEY_HOWTO}`);
  }
  const byId = new Map<string, KeyObject>();
  for (const [i, k] of keys.entries()) {
    const where = `keyring entry ${i + 1}`;
    if (typeof k.id !== "string" || !KID.test(k.id)) {
      throw new SealingError(
        "INVALID_KEY",
        `${where}: the key id must be 1-64 characters of A-Z a-z 0-9 . _ -`,
      );
    }
    if (!(k.key instanceof Uint8Array) || k.key.byteLength !== KEY_BYTES) {
      const len = k.key instanceof Uint8Array ? `${k.key.byteLength} bytes` : typeof k.key;
      throw new SealingError(
        "INVALID_KEY",
        `${where} (key id "${k.id}"): the key must be exactly ${KEY_BYTES} bytes, got ${len}; ${KEY_HOWTO}`,
      );
    }
    if (byId.has(k.id)) {
      throw new SealingError("INVALID_KEY", `${where}: key id "${k.id}" appears twice`);
    }
    byId.set(k.id, createSecretKey(Buffer.from(k.key))); // a copy: later changes to k.key don't leak in
  }
  const ids = [...byId.keys()];
  const primaryId = ids[0] as string;
  const primary = byId.get(primaryId) as KeyObject;

  return {
    primaryId,
    ids,
    has: (id) => byId.has(id),
    checkValue(id) {
      const key = byId.get(id);
      if (key === undefined) {
        throw new SealingError("KEY_NOT_FOUND", `key id "${id}" is not in the keyring`);
      }
      return createHmac("sha256", key).update("tokenvend key check v1").digest("base64url");
    },
    seal(plaintext, aad) {
      const header = `${FORMAT}:${primaryId}:`;
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv("aes-256-gcm", primary, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(header + aad, "utf8"));
      const ct = Buffer.concat([
        cipher.update(plaintext, "utf8"),
        cipher.final(),
        cipher.getAuthTag(),
      ]);
      return `${header}${iv.toString("base64url")}:${ct.toString("base64url")}`;
    },
    open(sealed, aad) {
      const { kid, iv, ct } = parseSealed(sealed);
      const key = byId.get(kid);
      if (key === undefined) {
        throw new SealingError(
          "KEY_NOT_FOUND",
          `a value is sealed under key id "${kid}", which is not in the keyring (${ids.join(", ")}); ` +
            `add that key after the primary to read it`,
        );
      }
      try {
        const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES });
        decipher.setAAD(Buffer.from(`${FORMAT}:${kid}:${aad}`, "utf8"));
        decipher.setAuthTag(ct.subarray(ct.length - TAG_BYTES));
        return Buffer.concat([
          decipher.update(ct.subarray(0, ct.length - TAG_BYTES)),
          decipher.final(),
        ]).toString("utf8");
      } catch (err) {
        throw new SealingError(
          "DECRYPT_FAILED",
          `a value sealed under key id "${kid}" does not open: the key material for "${kid}" is not ` +
            "the one that sealed it, or the value was altered or moved from another document or field",
          { cause: err },
        );
      }
    },
  };
}

/** The key id a sealed value names, without opening it. */
export function sealedKeyId(sealed: string): string {
  return parseSealed(sealed).kid;
}

function parseSealed(sealed: string): { kid: string; iv: Buffer; ct: Buffer } {
  const parts = typeof sealed === "string" ? sealed.split(":") : [];
  const [format, kid, iv64, ct64] = parts;
  if (format !== FORMAT) {
    throw new SealingError(
      "MALFORMED",
      parts.length === 4 && format !== undefined && /^v\d+$/.test(format)
        ? `a sealed value has format ${format}; this version reads ${FORMAT}`
        : "a stored value is not a sealed value",
    );
  }
  if (
    parts.length !== 4 ||
    kid === undefined ||
    !KID.test(kid) ||
    iv64 === undefined ||
    ct64 === undefined ||
    !B64URL.test(iv64) ||
    !B64URL.test(ct64)
  ) {
    throw new SealingError("MALFORMED", "a sealed value is malformed");
  }
  const iv = Buffer.from(iv64, "base64url");
  const ct = Buffer.from(ct64, "base64url");
  if (iv.length !== IV_BYTES || ct.length < TAG_BYTES) {
    throw new SealingError("MALFORMED", `a sealed value under key id "${kid}" is truncated`);
  }
  // One spelling per value: base64url ignores stray trailing bits, so a value with an extra or
  // altered last character would otherwise open too (found by the fuzz run).
  if (iv.toString("base64url") !== iv64 || ct.toString("base64url") !== ct64) {
    throw new SealingError(
      "MALFORMED",
      `a sealed value under key id "${kid}" is not canonical base64url`,
    );
  }
  return { kid, iv, ct };
}

// ---------------------------------------------------------------------------------------------
// Configuration: TOKENVEND_ENCRYPTION_KEYS and key files

/** Standard or URL-safe base64 of exactly 32 bytes (43 characters and an optional `=`). */
const KEY_B64 = /^[A-Za-z0-9+/_-]{43}=?$/;

function decodeKey(text: string): Buffer | undefined {
  const t = text.trim();
  if (!KEY_B64.test(t)) return undefined;
  const bytes = Buffer.from(t.replace(/-/g, "+").replace(/_/g, "/"), "base64");
  return bytes.length === KEY_BYTES ? bytes : undefined;
}

/**
 * Parses `kid:base64,kid:base64,…` (the first key seals). Empty entries are skipped. Errors name
 * the entry (position and key id) and never echo key material.
 */
export function parseKeys(spec: string, source = "TOKENVEND_ENCRYPTION_KEYS"): KeyringKey[] {
  const keys: KeyringKey[] = [];
  const entries = spec.split(",");
  for (const [i, raw] of entries.entries()) {
    const entry = raw.trim();
    if (entry === "") continue;
    const where = `${source} entry ${i + 1}`;
    const colon = entry.indexOf(":");
    if (colon < 0) {
      throw new SealingError(
        "INVALID_KEY",
        `${where}: expected kid:base64-key (for example primary:<44 base64 characters>); ${KEY_HOWTO}`,
      );
    }
    const id = entry.slice(0, colon).trim();
    if (!KID.test(id)) {
      throw new SealingError(
        "INVALID_KEY",
        `${where}: the key id before ":" must be 1-64 characters of A-Z a-z 0-9 . _ -`,
      );
    }
    if (keys.some((k) => k.id === id)) {
      throw new SealingError("INVALID_KEY", `${where}: key id "${id}" appears twice`);
    }
    const key = decodeKey(entry.slice(colon + 1));
    if (key === undefined) {
      throw new SealingError(
        "INVALID_KEY",
        `${where} (key id "${id}"): the key must be base64 of exactly ${KEY_BYTES} bytes; ${KEY_HOWTO}`,
      );
    }
    keys.push({ id, key });
  }
  if (keys.length === 0) {
    throw new SealingError("INVALID_KEY", `${source} has no keys; ${KEY_HOWTO}`);
  }
  return keys;
}

/** `createKeyring(parseKeys(spec))`. */
export function parseKeyring(spec: string, source?: string): Keyring {
  return createKeyring(parseKeys(spec, source));
}

/**
 * Reads one key per file, in order (the first seals); the key id is the file's name. A file holds
 * the key as base64 text (what `openssl rand -base64 32 > FILE` writes; surrounding whitespace is
 * ignored) or as exactly 32 raw bytes (`openssl rand 32 > FILE`).
 */
export async function readKeyFiles(paths: readonly string[]): Promise<KeyringKey[]> {
  const keys: KeyringKey[] = [];
  for (const path of paths) {
    const id = basename(path);
    if (!KID.test(id)) {
      throw new SealingError(
        "INVALID_KEY",
        `key file ${path}: its name is the key id and must be 1-64 characters of A-Z a-z 0-9 . _ -`,
      );
    }
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (err) {
      throw new SealingError(
        "INVALID_KEY",
        `key file ${path}: cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`,
        { cause: err },
      );
    }
    const key =
      decodeKey(bytes.toString("latin1")) ?? (bytes.length === KEY_BYTES ? bytes : undefined);
    if (key === undefined) {
      throw new SealingError(
        "INVALID_KEY",
        `key file ${path} (key id "${id}"): expected base64 of ${KEY_BYTES} bytes or ${KEY_BYTES} raw bytes; ${KEY_HOWTO}`,
      );
    }
    keys.push({ id, key });
  }
  return keys;
}

/** `createKeyring(await readKeyFiles(paths))`. */
export async function loadKeyFiles(paths: readonly string[]): Promise<Keyring> {
  return createKeyring(await readKeyFiles(paths));
}

// ---------------------------------------------------------------------------------------------
// Token fields

/**
 * The sealed fields; everything else in a stored document is plaintext. The owner is sealed too:
 * a dump does not show who owns a session, and an owner cannot be swapped without the key.
 */
export const sealedTokenFields = ["accessToken", "refreshToken", "idToken", "owner"] as const;
export type SealedTokenField = (typeof sealedTokenFields)[number];

/**
 * Associated data of one token field: `${keyId}#${generation}#${field}`. Unambiguous even when a
 * session id contains `#`: read from the right, the field name has no `#` and the generation is
 * digits only.
 */
export function tokenFieldAad(keyId: string, generation: number, field: SealedTokenField): string {
  return `${keyId}#${generation}#${field}`;
}
