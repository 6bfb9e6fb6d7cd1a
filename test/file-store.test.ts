// The file adapter on real temp directories: the shared contract suites, then what only this
// adapter has: file modes, what is in the bytes on disk, restarts, the write queue, re-encryption,
// and that it is not shared. Its directory lock and its state file have their own tests
// (directory-lock.test.ts, state-file.test.ts).

import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import test from "ava";
import { grantKey, keyId, type LiveRecord, sessionKey } from "../src/core/token.ts";
import { LOCK_FILE } from "../src/store/directory-lock.ts";
import { createFileStore } from "../src/store/file-store.ts";
import { createKeyring, type SealingError } from "../src/store/sealing.ts";
import { STATE_FILE } from "../src/store/state-file.ts";
import { StoreError } from "../src/store/store-error.ts";
import { ring, tempDirs } from "./support/file-store.ts";
import { claimContract, live, storeContract, uniqueSession } from "./support/store-contract.ts";

const tempDir = tempDirs(test);

const factory = { create: async () => createFileStore({ dir: await tempDir(), keyring: ring }) };
storeContract(test, "file store", factory);
claimContract(test, "file store", factory);

const mode = async (p: string) => (await fs.stat(p)).mode & 0o777;

test("the directory is 0700, the state file and the lock 0600", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  await store.insert(live(grantKey("g"), 1));
  t.is(store.path, path.join(dir, STATE_FILE));
  t.is(await mode(dir), 0o700);
  t.is(await mode(store.path), 0o600);
  t.is(await mode(path.join(dir, LOCK_FILE)), 0o600);
  await store.close();
  await t.throwsAsync(fs.access(path.join(dir, LOCK_FILE))); // released on close
});

test("an existing directory with wider permissions is narrowed to 0700", async (t) => {
  const dir = await tempDir();
  await fs.mkdir(dir, { mode: 0o755 });
  await fs.chmod(dir, 0o755);
  const store = await createFileStore({ dir, keyring: ring });
  t.is(await mode(dir), 0o700);
  await store.close();
});

test("the bytes on disk hold no token material; the token fields are sealed values", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  const secrets: string[] = [];
  for (let i = 0; i < 5; i++) {
    const at = `access-${randomBytes(12).toString("hex")}`;
    const rt = `refresh-${randomBytes(12).toString("hex")}`;
    const idt = `idtoken-${randomBytes(12).toString("hex")}`;
    secrets.push(at, rt, idt);
    const r = live(sessionKey(uniqueSession(), "corp"), 1, at) as LiveRecord;
    await store.insert({ ...r, tokens: { ...r.tokens, refreshToken: rt, idToken: idt } });
  }
  await store.close();
  const bytes = await fs.readFile(path.join(dir, STATE_FILE));
  const text = bytes.toString("latin1");
  for (const s of secrets) {
    t.false(text.includes(s));
    t.false(text.includes(Buffer.from(s).toString("base64")));
    t.false(text.includes(Buffer.from(s).toString("hex")));
  }
  const state = JSON.parse(bytes.toString("utf8"));
  t.is(state.format, "tokenvend-file-store");
  t.is(state.version, 1);
  t.is(state.tokens.length, 5);
  for (const doc of state.tokens) {
    t.regex(doc.accessToken, /^v1:a:/);
    t.regex(doc.refreshToken, /^v1:a:/);
    t.regex(doc.idToken, /^v1:a:/);
    t.is(doc.kid, "a");
  }
});

test("everything survives close and reopen", async (t) => {
  const dir = await tempDir();
  const s = uniqueSession();
  const a = sessionKey(s, "a");
  const b = sessionKey(s, "b");
  const g = grantKey("billing");
  let store = await createFileStore({ dir, keyring: ring });
  for (let gen = 1; gen <= 3; gen++) await store.insert(live(a, gen));
  await store.insert(live(b, 1));
  await store.insert({ key: b, generation: 2, reason: "revoked" });
  await store.insert(live(g, 7));
  await store.pruneBelow(a, 3);
  const before = {
    a: await store.getActive(a),
    session: await store.getSession(s),
    gens: await store.activeGenerations([a, b, g]),
  };
  await store.close();

  store = await createFileStore({ dir, keyring: ring });
  t.deepEqual(await store.getActive(a), before.a);
  t.deepEqual(await store.getActive(a), live(a, 3));
  t.deepEqual(await store.getSession(s), before.session);
  t.deepEqual(
    await store.activeGenerations([a, b, g]),
    new Map([
      [keyId(a), 3],
      [keyId(b), 2],
      [keyId(g), 7],
    ]),
  );
  t.is((await store.getActive(b))?.reason, "revoked");
  t.is(await store.pruneBelow(a, 3), 0); // the pruned generations stayed pruned
  // Claims are not kept across restarts (one process per directory; see file-store.ts).
  t.true((await store.claim({ key: a, generation: 3, owner: "x", leaseUntil: 1 })).acquired);
  await store.close();
});

test("a file store is not shared: while it is open no other store opens its directory", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  t.false(store.shared);
  const err = await t.throwsAsync(createFileStore({ dir, keyring: ring }), {
    instanceOf: StoreError,
  });
  t.is(err?.code, "LOCKED");
  await store.close();
});

test("a caller that aborts while its write waits in the queue writes nothing", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  const key = grantKey("g");
  const ac = new AbortController();
  const first = store.insert(live(key, 1));
  const second = store.insert(live(key, 2), { signal: ac.signal });
  ac.abort(new Error("gave up"));
  await first;
  t.is((await t.throwsAsync(second))?.message, "gave up");
  t.is((await store.getActive(key))?.generation, 1);
  const already = new AbortController();
  already.abort(new Error("before"));
  t.is((await t.throwsAsync(store.getActive(key, { signal: already.signal })))?.message, "before");
  await store.close();
  const closed = await t.throwsAsync(store.getActive(key), { instanceOf: StoreError });
  t.is(closed?.code, "UNAVAILABLE");
});

test("reencrypt moves every document to the new primary in one write", async (t) => {
  const dir = await tempDir();
  const oldKey = { id: "old", key: randomBytes(32) };
  const newKey = { id: "new", key: randomBytes(32) };
  let store = await createFileStore({ dir, keyring: createKeyring([oldKey]) });
  for (let i = 0; i < 5; i++) await store.insert(live(grantKey(`g${i}`), 1, `token-${i}`));
  await store.insert({ key: grantKey("g0"), generation: 2, reason: "revoked" });
  await store.close();

  // Without the old key the store cannot start; with it as a secondary it can.
  const missing = await t.throwsAsync(createFileStore({ dir, keyring: createKeyring([newKey]) }));
  t.is((missing as SealingError).code, "KEY_NOT_FOUND");
  store = await createFileStore({ dir, keyring: createKeyring([newKey, oldKey]) });
  t.deepEqual(await store.reencrypt({ dryRun: true }), {
    scanned: 5, // the revocation has nothing sealed
    resealed: 5,
    fromKeys: { old: 5 },
    unreadable: {},
  });
  t.is((await store.reencrypt()).resealed, 5);
  t.is((await store.reencrypt()).resealed, 0);
  await store.close();
  const state = JSON.parse(await fs.readFile(path.join(dir, STATE_FILE), "utf8"));
  t.deepEqual(state.tokens.map((d: { kid?: string }) => d.kid ?? "-").sort(), [
    "-",
    "new",
    "new",
    "new",
    "new",
    "new",
  ]);
  // The old key can go now.
  store = await createFileStore({ dir, keyring: createKeyring([newKey]) });
  t.is((await store.getActive(grantKey("g4")))?.tokens?.accessToken, "token-4");
  await store.close();
});
