// Backups and migrations between stores (src/ops/): export every key's active generation to a
// sealed file, import it into any store under any keys. A round trip memory → file → MongoDB →
// file → file store loses nothing; the files hold no token material; import is idempotent and a
// newer generation already in the store wins; a file altered, reordered, cut short or opened with
// the wrong secret does not read.

import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { finished } from "node:stream/promises";
import test from "ava";
import { grantKey, keyId, sessionKey, type TokenRecord } from "../src/core/token.ts";
import type { TokenStore } from "../src/core/token-store.ts";
import {
  createExportWriter,
  ExportFormatError,
  exportHeader,
  readExport,
} from "../src/ops/export-file.ts";
import {
  ExportKeyError,
  type ExportSecret,
  keyringForImport,
  sealingForExport,
} from "../src/ops/export-key.ts";
import { exportStore } from "../src/ops/export-store.ts";
import { importRecords } from "../src/ops/import-store.ts";
import { plainRecord } from "../src/ops/record-json.ts";
import { createFileStore } from "../src/store/file-store.ts";
import { createMemoryStore } from "../src/store/memory-store.ts";
import { createMongoStore } from "../src/store/mongo-store.ts";
import { createKeyring, generateKey } from "../src/store/sealing.ts";
import { useMongo } from "./support/mongo.ts";

const DB = `tokenvend_export_${process.pid}`;
const mongo = useMongo(test, DB);
let dir: string;
let prefixes = 0;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "tokenvend-export-"));
});
test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const ring = () => createKeyring([{ id: `k${prefixes}`, key: randomBytes(32) }]);
const mongoStore = () =>
  createMongoStore({
    client: mongo.client,
    dbName: DB,
    keyring: ring(),
    collectionPrefix: `x${prefixes++}_`,
  });
const fileStore = async () =>
  createFileStore({ dir: join(dir, `store-${prefixes++}`), keyring: ring() });
const exportKey: ExportSecret = { kind: "key", keyText: `backup:${generateKey()}`, source: "test" };
const passphrase: ExportSecret = {
  kind: "passphrase",
  passphrase: "correct horse battery staple",
  source: "test",
};

/** Every token value a fixture holds, to look for in raw files. */
const secrets: string[] = [];
const secret = (name: string) => {
  const v = `${name}-${randomBytes(12).toString("hex")}`;
  secrets.push(v);
  return v;
};

function fixture(): TokenRecord[] {
  const t0 = 1_750_000_000_000;
  const full = (sessionId: string, provider: string, generation: number): TokenRecord => ({
    key: sessionKey(sessionId, provider),
    generation,
    reason: generation === 1 ? "stored" : "refreshed",
    tokens: {
      accessToken: secret("at"),
      refreshToken: secret("rt"),
      idToken: secret("id"),
      tokenType: "Bearer",
      scopes: ["openid", "offline_access", "api:read"],
      issuedAt: t0 + generation,
      expiresAt: t0 + 3_600_000 + generation,
      subject: "alice",
      clientId: "web",
    },
  });
  return [
    full("s-1", "corp", 1),
    full("s-1", "corp", 2), // two generations: the highest is exported
    full("s-1", "github", 7),
    full("sessión #ünïcode\u00a0x", "corp", 3),
    {
      key: sessionKey("minimal", "corp"),
      generation: 1,
      reason: "stored",
      tokens: {
        accessToken: secret("at"),
        tokenType: "Bearer",
        scopes: [],
        issuedAt: t0,
        expiresAt: t0 + 60_000,
      },
    },
    {
      key: grantKey("billing"),
      generation: 4,
      reason: "granted",
      tokens: {
        accessToken: secret("grant").padEnd(16_000, "x"),
        tokenType: "Bearer",
        scopes: ["billing.read"],
        issuedAt: t0,
        expiresAt: t0 + 300_000,
      },
    },
    full("gone", "corp", 1),
    { key: sessionKey("gone", "corp"), generation: 2, reason: "revoked" },
  ];
}

async function fill(store: TokenStore, records: readonly TokenRecord[]) {
  for (const r of records) await store.insert(r);
}

/** Every key's active generation, as plain data, in key order. */
async function everything(store: TokenStore): Promise<unknown[]> {
  const out: TokenRecord[] = [];
  let after: string | undefined;
  do {
    const page = await store.listActive({ after, limit: 3 });
    out.push(...page.records);
    after = page.next;
  } while (after !== undefined);
  return out.sort((a, b) => (keyId(a.key) < keyId(b.key) ? -1 : 1)).map(plainRecord);
}

async function exportTo(store: TokenStore, secretGiven: ExportSecret, name: string) {
  const path = join(dir, name);
  const out = createWriteStream(path, { mode: 0o600 });
  const { keyring, sealing } = await sealingForExport(secretGiven);
  const writer = createExportWriter(out, {
    keyring,
    header: exportHeader(sealing, store.kind, new Date()),
  });
  const counts = await exportStore({ store, writer, pageSize: 2 });
  out.end();
  await finished(out);
  return { path, counts };
}

async function* recordsOf(path: string, secretGiven: ExportSecret) {
  for await (const item of readExport(createReadStream(path), (h) =>
    keyringForImport(h.sealing, secretGiven),
  )) {
    if (item.kind === "records") yield item.records;
  }
}

const importInto = (store: TokenStore, path: string, s: ExportSecret, dryRun = false) =>
  importRecords(recordsOf(path, s), { store, dryRun, concurrency: 4 });

async function fileRecords(path: string, s: ExportSecret): Promise<unknown[]> {
  const out: TokenRecord[] = [];
  for await (const records of recordsOf(path, s)) out.push(...records);
  return out.sort((a, b) => (keyId(a.key) < keyId(b.key) ? -1 : 1)).map(plainRecord);
}

test("memory → file → MongoDB → file → file store: every key, generation, binding and token survives", async (t) => {
  const memory = createMemoryStore();
  await fill(memory, fixture());
  const original = await everything(memory);
  t.is(original.length, 6);

  const first = await exportTo(memory, exportKey, "memory.tvx");
  t.deepEqual(first.counts, { records: 6, sessions: 4, grants: 1, revoked: 1 });

  const mongoTarget = mongoStore();
  t.teardown(() => mongoTarget.close());
  const dry = await importInto(mongoTarget, first.path, exportKey, true);
  t.like(dry, { read: 6, imported: 6, verified: 0 });
  t.deepEqual(await everything(mongoTarget), [], "a dry run writes nothing");
  const intoMongo = await importInto(mongoTarget, first.path, exportKey);
  t.deepEqual(intoMongo, {
    read: 6,
    imported: 6,
    present: 0,
    newer: 0,
    conflicts: 0,
    verified: 6,
    mismatched: [],
  });
  t.deepEqual(await everything(mongoTarget), original);

  // Exported again from MongoDB (its own keyring), under a passphrase this time.
  const second = await exportTo(mongoTarget, passphrase, "mongo.tvx");
  t.deepEqual(second.counts, first.counts);
  t.deepEqual(await fileRecords(second.path, passphrase), original);
  t.deepEqual(await fileRecords(first.path, exportKey), original);

  const files = await fileStore();
  t.teardown(() => files.close());
  t.like(await importInto(files, second.path, passphrase), { imported: 6, verified: 6 });
  t.deepEqual(await everything(files), original);
  const third = await exportTo(files, exportKey, "file.tvx");
  t.deepEqual(await fileRecords(third.path, exportKey), original);
});

test("an export file holds no token material: not in clear, not in base64", async (t) => {
  const memory = createMemoryStore();
  const records = fixture();
  await fill(memory, records);
  for (const s of [exportKey, passphrase]) {
    const { path } = await exportTo(memory, s, `raw-${s.kind}.tvx`);
    const raw = await readFile(path, "latin1");
    const tokens = records.flatMap((r) =>
      r.tokens === undefined
        ? []
        : [r.tokens.accessToken, r.tokens.refreshToken, r.tokens.idToken].filter(
            (v): v is string => v !== undefined,
          ),
    );
    t.true(tokens.length >= 10);
    for (const token of tokens) {
      for (const form of [
        token,
        Buffer.from(token).toString("base64"),
        Buffer.from(token).toString("base64url"),
      ]) {
        t.false(raw.includes(form.slice(0, 24)), `${s.kind}: a token is readable in the file`);
      }
    }
    // The header says how it is sealed and nothing else.
    const header = JSON.parse(raw.split("\n")[0] as string);
    t.deepEqual(Object.keys(header).sort(), [
      "createdAt",
      "format",
      "sealing",
      "source",
      "version",
    ]);
    t.false(raw.includes("alice"), "bindings are sealed too");
  }
});

test("import is idempotent, and a newer generation already in the store wins", async (t) => {
  const memory = createMemoryStore();
  await fill(memory, fixture());
  const { path } = await exportTo(memory, exportKey, "idem.tvx");
  const target = mongoStore();
  t.teardown(() => target.close());
  await importInto(target, path, exportKey);
  t.like(await importInto(target, path, exportKey), { imported: 0, present: 6, verified: 0 });

  // The store moved on for one key.
  const key = sessionKey("s-1", "corp");
  const newer = { ...(await target.getActive(key))!, generation: 3 } as TokenRecord;
  await target.insert(newer);
  const report = await importInto(target, path, exportKey);
  t.like(report, { imported: 0, present: 5, newer: 1, conflicts: 0 });
  t.is((await target.getActive(key))?.generation, 3);

  // An older generation in the store is superseded by the file's.
  const older = mongoStore();
  t.teardown(() => older.close());
  await older.insert({
    key: grantKey("billing"),
    generation: 1,
    reason: "granted",
    tokens: { accessToken: "old", tokenType: "Bearer", scopes: [], issuedAt: 1, expiresAt: 2 },
  });
  t.like(await importInto(older, path, exportKey), { imported: 6, verified: 6 });
  t.is((await older.getActive(grantKey("billing")))?.generation, 4);
});

test("the same generation with other content is a conflict: the store's is kept", async (t) => {
  const source = createMemoryStore();
  const key = grantKey("diverged");
  const rec = (accessToken: string): TokenRecord => ({
    key,
    generation: 5,
    reason: "granted",
    tokens: { accessToken, tokenType: "Bearer", scopes: [], issuedAt: 1, expiresAt: 2 },
  });
  await source.insert(rec("from-the-file"));
  const { path } = await exportTo(source, exportKey, "conflict.tvx");
  const target = createMemoryStore();
  await target.insert(rec("already-here"));
  t.like(await importInto(target, path, exportKey), { imported: 0, conflicts: 1 });
  t.is((await target.getActive(key))?.tokens?.accessToken, "already-here");
});

test("fields a later version adds to the record pass through; a store that drops one fails verification", async (t) => {
  const source = createMemoryStore();
  const key = sessionKey("owned", "corp");
  const withOwner = {
    key,
    generation: 1,
    reason: "stored",
    tokens: { accessToken: "at", tokenType: "Bearer", scopes: [], issuedAt: 1, expiresAt: 2 },
    futureField: { owner: "team-a" },
  } as unknown as TokenRecord;
  await source.insert(withOwner);
  const { path } = await exportTo(source, exportKey, "future.tvx");
  const memory = createMemoryStore();
  t.like(await importInto(memory, path, exportKey), { imported: 1, verified: 1 });
  t.deepEqual((await memory.getActive(key)) as unknown, plainRecord(withOwner));
  // MongoDB keeps only the fields its documents have: the verification pass says so.
  const target = mongoStore();
  t.teardown(() => target.close());
  const report = await importInto(target, path, exportKey);
  t.deepEqual(report.mismatched, ["s/corp/owned"]);
});

test("a file altered, reordered, cut short, or opened with the wrong secret does not read", async (t) => {
  const memory = createMemoryStore();
  await fill(memory, fixture());
  const { path } = await exportTo(memory, exportKey, "tamper.tvx");
  const lines = (await readFile(path, "utf8")).trimEnd().split("\n");
  t.is(lines.length, 1 + 3 + 1, "header, three chunks of two, end");
  const variant = async (name: string, ls: string[]) => {
    const p = join(dir, name);
    await writeFile(p, `${ls.join("\n")}\n`);
    return p;
  };
  const reading = (p: string, s: ExportSecret = exportKey) => fileRecords(p, s);
  const flip = (line: string) =>
    `${line.slice(0, -5)}${line.at(-5) === "A" ? "B" : "A"}${line.slice(-4)}`;

  await t.throwsAsync(reading(await variant("cut.tvx", lines.slice(0, -1))), {
    instanceOf: ExportFormatError,
    message: /cut short/,
  });
  await t.throwsAsync(
    reading(await variant("swapped.tvx", [lines[0]!, lines[2]!, lines[1]!, ...lines.slice(3)])),
    { instanceOf: ExportFormatError, message: /does not open/ },
  );
  await t.throwsAsync(
    reading(await variant("flipped.tvx", [lines[0]!, flip(lines[1]!), ...lines.slice(2)])),
    { instanceOf: ExportFormatError },
  );
  const header = JSON.parse(lines[0]!);
  header.createdAt = "2001-01-01T00:00:00.000Z";
  await t.throwsAsync(
    reading(await variant("header.tvx", [JSON.stringify(header), ...lines.slice(1)])),
    { instanceOf: ExportFormatError, message: /does not open/ },
  );
  const dropped = [...lines.slice(0, 2), ...lines.slice(3)];
  await t.throwsAsync(reading(await variant("dropped.tvx", dropped)), {
    instanceOf: ExportFormatError,
  });
  await t.throwsAsync(
    reading(path, { kind: "key", keyText: `backup:${generateKey()}`, source: "test" }),
    { instanceOf: ExportFormatError, message: /wrong key or passphrase/ },
  );
  await t.throwsAsync(
    reading(path, { kind: "key", keyText: `other:${generateKey()}`, source: "test" }),
    {
      instanceOf: ExportKeyError,
      message: /sealed under the export key "backup"; the key given is "other"/,
    },
  );
  await t.throwsAsync(reading(path, passphrase), { instanceOf: ExportKeyError });
  await t.throwsAsync(reading(await variant("empty.tvx", [])), { instanceOf: ExportFormatError });

  const sealedWithPass = await exportTo(memory, passphrase, "pass.tvx");
  await t.throwsAsync(
    reading(sealedWithPass.path, { ...passphrase, passphrase: "not the passphrase at all" }),
    { instanceOf: ExportFormatError, message: /wrong key or passphrase/ },
  );
  await t.throwsAsync(reading(sealedWithPass.path, { ...passphrase, passphrase: "short" }), {
    instanceOf: ExportKeyError,
    message: /at least 12 characters/,
  });
});
