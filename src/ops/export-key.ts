// What seals an export file: an export key (the encryption keys' `kid:base64` form, or a key file
// whose name is the key id) or a passphrase stretched with scrypt. Either way the result is a
// one-key keyring of store/sealing.ts, so an export is sealed exactly like a stored token
// (AES-256-GCM, associated data bound in). The file's header says which was used and carries the
// scrypt salt and cost; nothing secret is ever written to it.

import { randomBytes, scrypt as scryptCb } from "node:crypto";
import { promisify } from "node:util";
import { createKeyring, type Keyring, parseKeys, readKeyFiles } from "../store/sealing.ts";

const scrypt = promisify(scryptCb) as (
  password: string,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;

/** How an export file is sealed, as its header records it. */
export type ExportSealing =
  | { readonly kind: "key"; readonly keyId: string }
  | {
      readonly kind: "passphrase";
      readonly kdf: "scrypt";
      /** CPU/memory cost (a power of two), block size and parallelism. */
      readonly N: number;
      readonly r: number;
      readonly p: number;
      /** base64url, 16 bytes or more. */
      readonly salt: string;
    };

/** Where the secret comes from (the CLI reads flags and env into this). */
export type ExportSecret =
  | { readonly kind: "key"; readonly keyText: string; readonly source: string }
  | { readonly kind: "keyFile"; readonly path: string }
  | { readonly kind: "passphrase"; readonly passphrase: string; readonly source: string };

export class ExportKeyError extends Error {
  override readonly name = "ExportKeyError";
}

// OWASP's scrypt minimum for interactive logins is N=2^17, r=8, p=1 (128 MiB, ~0.3 s here).
const SCRYPT = { N: 2 ** 17, r: 8, p: 1 } as const;
/** A header may ask for at most this much: a crafted file cannot make import use gigabytes. */
const MAX_SCRYPT_MEMORY = 512 * 1024 * 1024;
export const MIN_PASSPHRASE_LENGTH = 12;
const PASSPHRASE_KEY_ID = "passphrase";

/** A keyring for writing a new export, and the sealing its header records. */
export async function sealingForExport(
  secret: ExportSecret,
): Promise<{ keyring: Keyring; sealing: ExportSealing }> {
  if (secret.kind === "passphrase") {
    const sealing: ExportSealing = {
      kind: "passphrase",
      kdf: "scrypt",
      ...SCRYPT,
      salt: randomBytes(16).toString("base64url"),
    };
    return { keyring: await passphraseKeyring(secret, sealing), sealing };
  }
  const keyring = await keyKeyring(secret);
  return { keyring, sealing: { kind: "key", keyId: keyring.primaryId } };
}

/** The keyring that opens an export sealed as its header says, from the secret given. */
export async function keyringForImport(
  sealing: ExportSealing,
  secret: ExportSecret,
): Promise<Keyring> {
  if (sealing.kind === "passphrase") {
    if (secret.kind !== "passphrase") {
      throw new ExportKeyError("this export is sealed under a passphrase: give the passphrase");
    }
    return passphraseKeyring(secret, sealing);
  }
  if (secret.kind === "passphrase") {
    throw new ExportKeyError(
      `this export is sealed under the export key "${sealing.keyId}": give that key, not a passphrase`,
    );
  }
  const keyring = await keyKeyring(secret);
  if (keyring.primaryId !== sealing.keyId) {
    throw new ExportKeyError(
      `this export is sealed under the export key "${sealing.keyId}"; the key given is "${keyring.primaryId}"`,
    );
  }
  return keyring;
}

async function keyKeyring(secret: Exclude<ExportSecret, { kind: "passphrase" }>) {
  const keys =
    secret.kind === "key"
      ? parseKeys(secret.keyText, secret.source)
      : await readKeyFiles([secret.path]);
  if (keys.length !== 1) {
    throw new ExportKeyError(
      `${secret.kind === "key" ? secret.source : secret.path}: give exactly one export key`,
    );
  }
  return createKeyring(keys);
}

async function passphraseKeyring(
  secret: Extract<ExportSecret, { kind: "passphrase" }>,
  sealing: Extract<ExportSealing, { kind: "passphrase" }>,
): Promise<Keyring> {
  if (secret.passphrase.length < MIN_PASSPHRASE_LENGTH) {
    throw new ExportKeyError(
      `${secret.source}: a passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters`,
    );
  }
  const { N, r, p } = sealing;
  const salt = Buffer.from(sealing.salt, "base64url");
  const memory = 128 * N * r * p;
  const powerOfTwo = Number.isSafeInteger(N) && N > 1 && (N & (N - 1)) === 0;
  if (!powerOfTwo || !(r >= 1 && r <= 32 && p >= 1 && p <= 16) || memory > MAX_SCRYPT_MEMORY) {
    throw new ExportKeyError("the export's scrypt parameters are out of the accepted range");
  }
  if (salt.length < 16) throw new ExportKeyError("the export's scrypt salt is too short");
  const key = await scrypt(secret.passphrase, salt, 32, { N, r, p, maxmem: memory + 1024 * 1024 });
  return createKeyring([{ id: PASSPHRASE_KEY_ID, key }]);
}
