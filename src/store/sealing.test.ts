// Unit tests of encryption at rest: what opens, what does not, and the exact error for each.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import test, { type ExecutionContext } from "ava";
import {
  createKeyring,
  generateKey,
  type Keyring,
  loadKeyFiles,
  parseKeyring,
  parseKeys,
  readKeyFiles,
  SealingError,
  type SealingErrorCode,
  sealedKeyId,
  tokenFieldAad,
} from "./sealing.ts";

const k1 = { id: "k1", key: randomBytes(32) };
const k2 = { id: "k2", key: randomBytes(32) };
const AAD = tokenFieldAad("s\u001fcorp\u001fsess-1", 3, "refreshToken");

function expectCode(t: ExecutionContext, fn: () => unknown, code: SealingErrorCode): SealingError {
  const err = t.throws(fn, { instanceOf: SealingError });
  t.is(err?.code, code);
  t.is(err?.name, "SealingError");
  return err as SealingError;
}

test("a sealed value opens to the same plaintext: empty, unicode and 64 KiB", (t) => {
  const ring = createKeyring([k1]);
  for (const plain of ["", "eyJhbGciOi.payload.sig", "äöü 🚀 \u0000 \u001f", "x".repeat(65_536)]) {
    t.is(ring.open(ring.seal(plain, AAD), AAD), plain);
  }
});

test("the sealed form is v1:<kid>:<iv>:<ct+tag>, fresh IV each time, no plaintext in it", (t) => {
  const ring = createKeyring([k1]);
  const plain = "access-token-secret-value";
  const a = ring.seal(plain, AAD);
  const b = ring.seal(plain, AAD);
  t.not(a, b);
  t.regex(a, /^v1:k1:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]+$/);
  t.false(a.includes(plain));
  t.false(a.includes(Buffer.from(plain).toString("base64")));
  t.is(sealedKeyId(a), "k1");
  // 12-byte IV (16 base64url chars), ciphertext as long as the plaintext plus a 16-byte tag.
  const ct = Buffer.from(a.split(":")[3] as string, "base64url");
  t.is(ct.length, plain.length + 16);
});

test("a sealed value has one spelling: a stray base64url character or trailing bits are MALFORMED", (t) => {
  const ring = createKeyring([k1]);
  const [format, kid, iv, ct] = ring.seal("a", AAD).split(":") as [string, string, string, string];
  // 12 IV bytes are 16 characters: a 17th decodes to the same bytes but is not the value.
  expectCode(t, () => ring.open(`${format}:${kid}:${iv}A:${ct}`, AAD), "MALFORMED");
  // 17 ciphertext bytes are 23 characters, the last with 2 unused bits: set one of them.
  const last = ct.at(-1) as string;
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const other = alphabet[alphabet.indexOf(last) ^ 1] as string;
  expectCode(
    t,
    () => ring.open(`${format}:${kid}:${iv}:${ct.slice(0, -1)}${other}`, AAD),
    "MALFORMED",
  );
  t.is(ring.open(`${format}:${kid}:${iv}:${ct}`, AAD), "a");
});

test("other associated data does not open: other key, generation or field", (t) => {
  const ring = createKeyring([k1]);
  const sealed = ring.seal("rt", AAD);
  for (const aad of [
    tokenFieldAad("s\u001fcorp\u001fsess-2", 3, "refreshToken"),
    tokenFieldAad("s\u001fcorp\u001fsess-1", 4, "refreshToken"),
    tokenFieldAad("s\u001fcorp\u001fsess-1", 3, "accessToken"),
    "",
  ]) {
    const err = expectCode(t, () => ring.open(sealed, aad), "DECRYPT_FAILED");
    t.regex(err.message, /does not open/);
    t.regex(err.message, /"k1"/);
    t.truthy(err.cause);
  }
});

test("a rotated keyring seals with the new primary and still opens the old key's values", (t) => {
  const old = createKeyring([k1]);
  const rotated = createKeyring([k2, k1]);
  const sealedOld = old.seal("value", AAD);
  t.is(rotated.primaryId, "k2");
  t.deepEqual(rotated.ids, ["k2", "k1"]);
  t.true(rotated.has("k1"));
  t.false(rotated.has("k3"));
  t.is(rotated.open(sealedOld, AAD), "value");
  t.is(sealedKeyId(rotated.seal("value", AAD)), "k2");
});

test("a value under a key id the ring lacks: KEY_NOT_FOUND naming the id and the ring", (t) => {
  const sealed = createKeyring([k1]).seal("value", AAD);
  const err = expectCode(t, () => createKeyring([k2]).open(sealed, AAD), "KEY_NOT_FOUND");
  t.is(
    err.message,
    'a value is sealed under key id "k1", which is not in the keyring (k2); add that key after the primary to read it',
  );
});

test("same key id, other key material: DECRYPT_FAILED, never garbage", (t) => {
  const sealed = createKeyring([k1]).seal("value", AAD);
  const impostor = createKeyring([{ id: "k1", key: randomBytes(32) }]);
  expectCode(t, () => impostor.open(sealed, AAD), "DECRYPT_FAILED");
});

test("a value sealed under a key id cannot be relabelled to another key id", (t) => {
  // Both keys equal: only the header binding stops the relabelled value from opening.
  const same = randomBytes(32);
  const ring = createKeyring([
    { id: "a", key: same },
    { id: "b", key: same },
  ]);
  const sealed = ring.seal("value", AAD);
  expectCode(t, () => ring.open(sealed.replace(/^v1:a:/, "v1:b:"), AAD), "DECRYPT_FAILED");
});

test("altered, truncated and foreign values: DECRYPT_FAILED or MALFORMED", (t) => {
  const ring = createKeyring([k1]);
  const sealed = ring.seal("value", AAD);
  const [v, kid, iv, ct] = sealed.split(":") as [string, string, string, string];
  const flipped = Buffer.from(ct, "base64url");
  flipped[0] = (flipped[0] as number) ^ 1;
  expectCode(
    t,
    () => ring.open(`${v}:${kid}:${iv}:${flipped.toString("base64url")}`, AAD),
    "DECRYPT_FAILED",
  );
  expectCode(t, () => ring.open(`${v}:${kid}:${iv}:${ct.slice(0, 10)}`, AAD), "MALFORMED");
  expectCode(t, () => ring.open(`${v}:${kid}:${iv.slice(2)}:${ct}`, AAD), "MALFORMED");
  expectCode(t, () => ring.open("plain-token", AAD), "MALFORMED");
  expectCode(t, () => ring.open("", AAD), "MALFORMED");
  expectCode(t, () => ring.open(`${sealed}:extra`, AAD), "MALFORMED");
  expectCode(t, () => ring.open(`${v}:${kid}:${iv}:${ct}!`, AAD), "MALFORMED");
  const future = expectCode(t, () => ring.open(`v2:${kid}:${iv}:${ct}`, AAD), "MALFORMED");
  t.is(future.message, "a sealed value has format v2; this version reads v1");
  expectCode(t, () => ring.open(42 as unknown as string, AAD), "MALFORMED");
});

test("createKeyring rejects an empty ring, bad ids, wrong lengths and duplicates", (t) => {
  t.regex(
    expectCode(t, () => createKeyring([]), "INVALID_KEY").message,
    /no keys; make one with `openssl rand -base64 32`/,
  );
  t.regex(
    expectCode(t, () => createKeyring([k1, { id: "short", key: randomBytes(16) }]), "INVALID_KEY")
      .message,
    /^keyring entry 2 \(key id "short"\): the key must be exactly 32 bytes, got 16 bytes; make one with/,
  );
  for (const id of ["", "has:colon", "has space", "x".repeat(65), "ünï"]) {
    expectCode(t, () => createKeyring([{ id, key: randomBytes(32) }]), "INVALID_KEY");
  }
  t.regex(
    expectCode(t, () => createKeyring([k1, { id: "k1", key: randomBytes(32) }]), "INVALID_KEY")
      .message,
    /key id "k1" appears twice/,
  );
});

test("the keyring copies its keys: changing the caller's buffer changes nothing", (t) => {
  const bytes = Buffer.from(randomBytes(32));
  const ring = createKeyring([{ id: "k", key: bytes }]);
  const sealed = ring.seal("value", AAD);
  bytes.fill(0);
  t.is(ring.open(sealed, AAD), "value");
});

test("parseKeys reads kid:base64 entries, primary first, tolerating spaces and empty entries", (t) => {
  const a = generateKey();
  const b = randomBytes(32).toString("base64url"); // URL-safe, unpadded
  const keys = parseKeys(` new:${a} , old:${b},`);
  t.deepEqual(
    keys.map((k) => k.id),
    ["new", "old"],
  );
  t.deepEqual(Buffer.from(keys[0]?.key as Uint8Array), Buffer.from(a, "base64"));
  t.deepEqual(Buffer.from(keys[1]?.key as Uint8Array), Buffer.from(b, "base64url"));
  const ring: Keyring = parseKeyring(`new:${a},old:${b}`);
  t.is(ring.primaryId, "new");
});

test("parseKeys errors name the entry, say how to make a key, and never echo the key", (t) => {
  const good = generateKey();
  const short = randomBytes(16).toString("base64");
  const err = expectCode(t, () => parseKeys(`k1:${good},k2:${short}`), "INVALID_KEY");
  t.is(
    err.message,
    'TOKENVEND_ENCRYPTION_KEYS entry 2 (key id "k2"): the key must be base64 of exactly 32 bytes; ' +
      "make one with `openssl rand -base64 32` or " +
      "`node -e \"console.log(require('crypto').randomBytes(32).toString('base64'))\"`",
  );
  t.false(err.message.includes(short));
  t.regex(
    expectCode(t, () => parseKeys(good), "INVALID_KEY").message,
    /^TOKENVEND_ENCRYPTION_KEYS entry 1: expected kid:base64-key/,
  );
  t.false(expectCode(t, () => parseKeys(good), "INVALID_KEY").message.includes(good));
  t.regex(
    expectCode(t, () => parseKeys(`bad id:${good}`), "INVALID_KEY").message,
    /entry 1: the key id/,
  );
  t.regex(
    expectCode(t, () => parseKeys(` , `), "INVALID_KEY").message,
    /^TOKENVEND_ENCRYPTION_KEYS has no keys/,
  );
  t.regex(
    expectCode(t, () => parseKeys("", "MY_KEYS"), "INVALID_KEY").message,
    /^MY_KEYS has no keys/,
  );
  expectCode(t, () => parseKeys(`k:${good}${good}`), "INVALID_KEY");
  expectCode(t, () => parseKeys(`k:${good.slice(0, 42)}**`), "INVALID_KEY");
  expectCode(t, () => parseKeys(`a:${good},a:${generateKey()}`), "INVALID_KEY");
});

test("key files: the file name is the key id; base64 text or 32 raw bytes", async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-keys-"));
  try {
    const text = generateKey();
    const raw = randomBytes(32);
    await fs.writeFile(path.join(dir, "2025-06"), `${text}\n`);
    await fs.writeFile(path.join(dir, "2024.key"), raw);
    const keys = await readKeyFiles([path.join(dir, "2025-06"), path.join(dir, "2024.key")]);
    t.deepEqual(
      keys.map((k) => k.id),
      ["2025-06", "2024.key"],
    );
    t.deepEqual(Buffer.from(keys[0]?.key as Uint8Array), Buffer.from(text, "base64"));
    t.deepEqual(Buffer.from(keys[1]?.key as Uint8Array), raw);
    t.is((await loadKeyFiles([path.join(dir, "2025-06")])).primaryId, "2025-06");

    await fs.writeFile(path.join(dir, "short"), randomBytes(16).toString("base64"));
    const err = await t.throwsAsync(readKeyFiles([path.join(dir, "short")]), {
      instanceOf: SealingError,
    });
    t.is(err?.code, "INVALID_KEY");
    t.regex(
      err?.message ?? "",
      /key file .*short \(key id "short"\): expected base64 of 32 bytes or 32 raw bytes; make one with `openssl rand -base64 32`/,
    );

    const missing = await t.throwsAsync(readKeyFiles([path.join(dir, "absent")]), {
      instanceOf: SealingError,
    });
    t.regex(missing?.message ?? "", /key file .*absent: cannot be read \(ENOENT\)/);

    await fs.writeFile(path.join(dir, "bad name"), generateKey());
    const badName = await t.throwsAsync(readKeyFiles([path.join(dir, "bad name")]), {
      instanceOf: SealingError,
    });
    t.regex(badName?.message ?? "", /its name is the key id/);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test("token field associated data is key#generation#field", (t) => {
  t.is(tokenFieldAad("g\u001fbilling", 12, "accessToken"), "g\u001fbilling#12#accessToken");
  // A session id holding '#' cannot collide with another key's generation/field suffix.
  t.not(
    tokenFieldAad("s\u001fp\u001fx#1#accessToken", 2, "idToken"),
    tokenFieldAad("s\u001fp\u001fx", 1, "accessToken"),
  );
});

test("generateKey makes distinct 32-byte keys", (t) => {
  const a = generateKey();
  t.is(Buffer.from(a, "base64").length, 32);
  t.not(a, generateKey());
  t.is(parseKeyring(`k:${a}`).primaryId, "k");
});
