// The MongoDB adapter against a real MongoDB-protocol server: FerretDB (SQLite) started here, or
// a real MongoDB when MONGODB_URI is set. The shared contract suites, then what only this
// adapter has: what is on disk, keys, round trips per call, indexes, and an outage.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import test, { type ExecutionContext } from "ava";
import { BSON, type CommandStartedEvent, type Document, MongoClient } from "mongodb";
import { startFerretdb } from "../scripts/ferretdb.ts";
import { grantKey, keyId, type LiveRecord, sessionKey } from "../src/core/token.ts";
import { UnreadableRecordError } from "../src/core/token-store.ts";
import { createMongoRun } from "../src/store/mongo-command.ts";
import {
  CHANGE_TIME_INDEX,
  KEY_GENERATION_INDEX,
  SESSION_INDEX,
} from "../src/store/mongo-indexes.ts";
import {
  CHANGES_COLLECTION,
  CLAIMS_COLLECTION,
  createMongoStore,
  type MongoStore,
  TOKENS_COLLECTION,
} from "../src/store/mongo-store.ts";
import { createGenerationSweep } from "../src/store/mongo-sweep.ts";
import { createKeyring, type Keyring, SealingError } from "../src/store/sealing.ts";
import { StoreError } from "../src/store/store-error.ts";
import { mongoForTests, type TestMongo } from "./support/mongo.ts";
import { claimContract, live, storeContract, uniqueSession } from "./support/store-contract.ts";

const DB = `tokenvend_mongo_store_${process.pid}`;
const external = Boolean(process.env.MONGODB_URI);

const keyA = { id: "a", key: randomBytes(32) };
const keyB = { id: "b", key: randomBytes(32) };
const ringA = createKeyring([keyA]);

let mongo: TestMongo;
let client: MongoClient;
let prefixes = 0;
const at = <T>(xs: readonly T[], i: number): T => xs[i] as T;
/** A collection prefix of its own per store, so tests share one server and database. */
const newPrefix = () => `t${prefixes++}_`;

test.before(async () => {
  mongo = await mongoForTests();
  client = await new MongoClient(mongo.uri, { serverSelectionTimeoutMS: 10_000 }).connect();
  await client.db(DB).dropDatabase();
});

test.after.always(async () => {
  await client
    ?.db(DB)
    .dropDatabase()
    .catch(() => {});
  await client?.close();
  await mongo?.stop();
});

const storeOn = (prefix: string, keyring: Keyring = ringA, c: MongoClient = client) =>
  createMongoStore({ client: c, dbName: DB, keyring, collectionPrefix: prefix });

// FerretDB (PostgreSQL backend) cannot store a NUL in a string; a real MongoDB can.
const factory = { create: async () => storeOn(newPrefix()), nulInStrings: external };
storeContract(test, "mongo store", factory);
claimContract(test, "mongo store", factory);

/** Every document of every collection of the database, as extended JSON. */
async function rawDump(): Promise<string> {
  const db = client.db(DB);
  const out: string[] = [];
  for (const { name } of await db.listCollections({}, { nameOnly: true }).toArray()) {
    for (const doc of await db.collection(name).find({}).toArray()) {
      out.push(BSON.EJSON.stringify(doc, { relaxed: false }));
    }
  }
  return out.join("\n");
}

test("a MongoDB store is shared: other replicas write the same collections", async (t) => {
  const store = storeOn(newPrefix());
  t.true(store.shared);
  await store.close();
});

test("a raw dump of every collection holds no token material", async (t) => {
  const store = storeOn(newPrefix());
  const secrets: string[] = [];
  for (let i = 0; i < 5; i++) {
    const s = uniqueSession();
    const at = `access-${randomBytes(12).toString("hex")}`;
    const rt = `refresh-${randomBytes(12).toString("hex")}`;
    const idt = `idtoken-${randomBytes(12).toString("hex")}`;
    secrets.push(at, rt, idt);
    const r = live(sessionKey(s, "corp"), 1, at) as LiveRecord;
    await store.insert({ ...r, tokens: { ...r.tokens, refreshToken: rt, idToken: idt } });
    await store.claim({ key: sessionKey(s, "corp"), generation: 1, owner: "r1", leaseUntil: 1 });
  }
  const dump = await rawDump();
  t.true(dump.length > 1_000);
  for (const secret of secrets) {
    t.false(dump.includes(secret), "plaintext token in the dump");
    t.false(dump.includes(Buffer.from(secret).toString("base64")), "base64 token in the dump");
    t.false(dump.includes(Buffer.from(secret).toString("hex")), "hex token in the dump");
  }
  await store.close();
});

test("the stored document: fields, dates, one sealed value per token under the primary kid", async (t) => {
  const prefix = newPrefix();
  const store = storeOn(prefix);
  const key = sessionKey(uniqueSession(), "corp");
  await store.insert(live(key, 1));
  await store.insert({ key, generation: 2, reason: "revoked" });
  const docs = await client
    .db(DB)
    .collection(`${prefix}${TOKENS_COLLECTION}`)
    .find({}, { projection: { _id: 0 }, sort: { generation: 1 } })
    .toArray();
  const [doc, tomb] = docs as unknown as [Document, Document];
  t.deepEqual(Object.keys(doc).sort(), [
    "accessToken",
    "clientId",
    "createdAt",
    "expiresAt",
    "generation",
    "issuedAt",
    "key",
    "kid",
    "kind",
    "provider",
    "reason",
    "refreshToken",
    "scopes",
    "sessionId",
    "subject",
    "tokenType",
  ]);
  t.is(doc.key, keyId(key));
  t.is(doc.kid, "a");
  t.regex(doc.accessToken, /^v1:a:/);
  t.regex(doc.refreshToken, /^v1:a:/);
  t.true(doc.expiresAt instanceof Date);
  t.is((doc.expiresAt as Date).getTime(), 1_700_000_000_000 + 3_600_000);
  t.deepEqual(Object.keys(tomb).sort(), [
    "createdAt",
    "generation",
    "key",
    "kind",
    "provider",
    "reason",
    "sessionId",
  ]);
  await store.close();
});

test("a document read with a keyring that lacks its key, or has other key material: UnreadableRecordError", async (t) => {
  const prefix = newPrefix();
  const key = sessionKey(uniqueSession(), "corp");
  await storeOn(prefix).insert(live(key, 1));

  const otherKid = storeOn(prefix, createKeyring([keyB]));
  const missing = await unreadable(t, otherKid.getActive(key));
  t.is(missing.reason, "KEY_NOT_FOUND");
  t.regex(missing.message, /key id "a", which is not in the keyring \(b\)/);
  t.true(missing.cause instanceof SealingError);
  await unreadable(t, otherKid.getSession((key as { sessionId: string }).sessionId));
  // activeGenerations and sessionGenerations open nothing, so they work without the key.
  t.deepEqual(await otherKid.activeGenerations([key]), new Map([[keyId(key), 1]]));
  t.deepEqual(await otherKid.sessionGenerations((key as { sessionId: string }).sessionId), [
    { key, generation: 1, revoked: false },
  ]);

  const sameKidOtherKey = storeOn(prefix, createKeyring([{ id: "a", key: randomBytes(32) }]));
  t.is((await unreadable(t, sameKidOtherKey.getActive(key))).reason, "DECRYPT_FAILED");
});

async function unreadable(
  t: ExecutionContext,
  p: Promise<unknown>,
): Promise<UnreadableRecordError> {
  const err = await t.throwsAsync(p, { instanceOf: UnreadableRecordError });
  return err as UnreadableRecordError;
}

test("a ciphertext moved to another document or field does not open", async (t) => {
  const prefix = newPrefix();
  const store = storeOn(prefix);
  const col = client.db(DB).collection(`${prefix}${TOKENS_COLLECTION}`);
  const k1 = sessionKey(uniqueSession(), "corp");
  const k2 = sessionKey(uniqueSession(), "corp");
  await store.insert(live(k1, 1, "victim-token"));
  await store.insert(live(k2, 1, "attacker-token"));
  await store.insert(live(k1, 2));
  const victim = (await col.findOne({ key: keyId(k1), generation: 1 })) as Document;

  // Into another key's document.
  await col.updateOne({ key: keyId(k2) }, { $set: { accessToken: victim.accessToken } });
  t.is((await unreadable(t, store.getActive(k2))).reason, "DECRYPT_FAILED");
  // Into another generation of the same key.
  await col.updateOne(
    { key: keyId(k1), generation: 2 },
    { $set: { accessToken: victim.accessToken } },
  );
  t.is((await unreadable(t, store.getActive(k1))).reason, "DECRYPT_FAILED");
  // Into another field of the same document.
  await col.updateOne(
    { key: keyId(k1), generation: 1 },
    { $set: { refreshToken: victim.accessToken, accessToken: victim.refreshToken } },
  );
  await col.deleteOne({ key: keyId(k1), generation: 2 });
  t.is((await unreadable(t, store.getActive(k1))).reason, "DECRYPT_FAILED");
  // A document relabelled to another session (sessionId and key rewritten) does not open either.
  const k3 = sessionKey(uniqueSession(), "corp");
  await store.insert(live(k3, 1, "third"));
  await col.updateOne(
    { key: keyId(k3) },
    { $set: { key: keyId(sessionKey("stolen", "corp")), sessionId: "stolen" } },
  );
  const relabelled = await unreadable(t, store.getActive(sessionKey("stolen", "corp")));
  t.is(relabelled.reason, "DECRYPT_FAILED");
  await store.close();
});

test("key rotation: a new primary reads old documents, reencrypt() moves them to the new kid", async (t) => {
  const prefix = newPrefix();
  const col = client.db(DB).collection(`${prefix}${TOKENS_COLLECTION}`);
  const before = storeOn(prefix, createKeyring([keyA]));
  const keys = Array.from({ length: 7 }, () => sessionKey(uniqueSession(), "corp"));
  for (const [i, k] of keys.entries()) await before.insert(live(k, 1, `token-${i}`));
  await before.insert({ key: at(keys, 0), generation: 2, reason: "revoked" });

  const rotated = storeOn(prefix, createKeyring([keyB, keyA]));
  t.is((await rotated.getActive(at(keys, 1)))?.tokens?.accessToken, "token-1");
  const fresh = sessionKey(uniqueSession(), "corp");
  await rotated.insert(live(fresh, 1, "fresh"));
  t.is((await col.findOne({ key: keyId(fresh) }))?.kid, "b");

  const dry = await rotated.reencrypt({ dryRun: true });
  t.deepEqual(dry, { scanned: 8, resealed: 7, fromKeys: { a: 7 }, unreadable: {} });
  t.is(await col.countDocuments({ kid: "a" }), 7, "a dry run writes nothing");
  // The tombstone (nothing sealed) and the new document are not touched.
  t.is((await rotated.reencrypt()).resealed, 7);
  t.is((await rotated.reencrypt()).resealed, 0);
  t.deepEqual(await col.distinct("kid"), ["b"]);
  t.is(await col.countDocuments({ accessToken: { $regex: "^v1:a:" } }), 0);

  // The old key can now go: a ring with the new key only reads everything.
  const onlyB = storeOn(prefix, createKeyring([keyB]));
  for (const [i, k] of keys.entries()) {
    const r = await onlyB.getActive(k);
    if (i === 0) t.is(r?.reason, "revoked");
    else t.is(r?.tokens?.accessToken, `token-${i}`);
  }
  // And the old one alone no longer does.
  const onlyA = storeOn(prefix, createKeyring([keyA]));
  t.is((await unreadable(t, onlyA.getActive(at(keys, 1)))).reason, "KEY_NOT_FOUND");
});

test("reencrypt pages through more documents than one page and skips what it cannot open", async (t) => {
  // Each update is one command; FerretDB answers it in time linear in the collection, so the page
  // is small here rather than the collection large.
  const prefix = newPrefix();
  const col = client.db(DB).collection(`${prefix}${TOKENS_COLLECTION}`);
  const old = storeOn(prefix, createKeyring([keyA]));
  const keys = Array.from({ length: 60 }, (_, i) => grantKey(`g-${prefix}-${i}`));
  await Promise.all(keys.map((k) => old.insert(live(k, 1, `t-${keyId(k)}`))));
  const stranger = createKeyring([{ id: "gone", key: randomBytes(32) }]);
  await storeOn(prefix, stranger).insert(live(grantKey(`g-${prefix}-stranger`), 1));
  const rotated = createMongoStore({
    client,
    dbName: DB,
    keyring: createKeyring([keyB, keyA]),
    collectionPrefix: prefix,
    reencryptPageSize: 25,
  });
  const progress: number[] = [];
  const report = await rotated.reencrypt({ onProgress: (r) => progress.push(r.scanned) });
  t.deepEqual(report, { scanned: 61, resealed: 60, fromKeys: { a: 60 }, unreadable: { gone: 1 } });
  t.deepEqual(progress, [25, 50, 61]);
  t.is(await col.countDocuments({ kid: "b" }), 60);
  t.is(await col.countDocuments({ kid: "gone" }), 1);
  for (const k of [at(keys, 0), at(keys, 59)]) {
    t.is((await rotated.getActive(k))?.tokens?.accessToken, `t-${keyId(k)}`);
  }
});

test("reencrypt reads the key id from each sealed value, not from the document's kid field", async (t) => {
  const prefix = newPrefix();
  const col = client.db(DB).collection(`${prefix}${TOKENS_COLLECTION}`);
  const key = sessionKey(uniqueSession(), "corp");
  await storeOn(prefix, createKeyring([keyA])).insert(live(key, 1, "sealed-under-a"));
  // The plaintext field says "b", the values say "a": the values win.
  await col.updateOne({ key: keyId(key) }, { $set: { kid: "b" } });
  const rotated = storeOn(prefix, createKeyring([keyB, keyA]));
  t.deepEqual(await rotated.reencrypt(), {
    scanned: 1,
    resealed: 1,
    fromKeys: { a: 1 },
    unreadable: {},
  });
  const doc = await col.findOne({ key: keyId(key) });
  t.regex(String(doc?.accessToken), /^v1:b:/);
  t.regex(String(doc?.refreshToken), /^v1:b:/);
  t.is(
    (await storeOn(prefix, createKeyring([keyB])).getActive(key))?.tokens?.accessToken,
    "sealed-under-a",
  );
});

test("activeGenerations over 200 keys and getSession are ONE command each", async (t) => {
  const monitored = await new MongoClient(mongo.uri, { monitorCommands: true }).connect();
  try {
    const store = storeOn(newPrefix(), ringA, monitored);
    await store.ensureIndexes();
    const keys = Array.from({ length: 200 }, (_, i) =>
      i % 2 ? sessionKey(uniqueSession(), `p${i % 7}`) : grantKey(uniqueSession("g")),
    );
    for (const [i, k] of keys.entries()) {
      if (i % 4 === 3) continue; // absent
      await store.insert(live(k, 1));
      if (i % 3 === 0) await store.insert(live(k, 2));
    }
    const session = uniqueSession();
    for (const p of ["a", "b", "c", "d"])
      for (let g = 1; g <= 3; g++) await store.insert(live(sessionKey(session, p), g));

    const commands: CommandStartedEvent[] = [];
    const listener = (e: CommandStartedEvent) => commands.push(e);
    monitored.on("commandStarted", listener);

    const gens = await store.activeGenerations(keys);
    t.deepEqual(
      commands.map((c) => c.commandName),
      ["find"],
    );
    t.is(gens.size, 150);
    // The answer carries key and generation only.
    t.deepEqual(commands[0]?.command.projection, { _id: 0, key: 1, generation: 1 });

    commands.length = 0;
    const records = await store.getSession(session);
    t.deepEqual(
      commands.map((c) => c.commandName),
      ["find"],
    );
    t.deepEqual(records.map((r) => r.generation).sort(), [3, 3, 3, 3]);

    commands.length = 0;
    await store.getActive(at(keys, 0));
    t.deepEqual(
      commands.map((c) => c.commandName),
      ["find"],
    );
    monitored.off("commandStarted", listener);
  } finally {
    await monitored.close();
  }
});

test("ensureIndexes creates the named indexes, one createIndexes command each, idempotently", async (t) => {
  const monitored = await new MongoClient(mongo.uri, { monitorCommands: true }).connect();
  try {
    const commands: CommandStartedEvent[] = [];
    monitored.on("commandStarted", (e) => commands.push(e));
    const prefix = newPrefix();
    const store = storeOn(prefix, ringA, monitored);
    await store.ensureIndexes();
    await store.ensureIndexes(); // once per store
    const creates = commands.filter((c) => c.commandName === "createIndexes");
    t.is(creates.length, 4);
    for (const c of creates) t.is((c.command.indexes as unknown[]).length, 1);

    const db = monitored.db(DB);
    const tokenIx = await db.collection(`${prefix}${TOKENS_COLLECTION}`).listIndexes().toArray();
    const claimIx = await db.collection(`${prefix}${CLAIMS_COLLECTION}`).listIndexes().toArray();
    const byName = (ix: Document[]) => new Map(ix.map((i) => [i.name as string, i]));
    t.deepEqual(byName(tokenIx).get(KEY_GENERATION_INDEX)?.key, { key: 1, generation: 1 });
    t.true(byName(tokenIx).get(KEY_GENERATION_INDEX)?.unique);
    t.deepEqual(byName(tokenIx).get(SESSION_INDEX)?.key, { sessionId: 1 });
    t.falsy(byName(tokenIx).get(SESSION_INDEX)?.unique);
    t.deepEqual(byName(claimIx).get(KEY_GENERATION_INDEX)?.key, { key: 1, generation: 1 });
    t.true(byName(claimIx).get(KEY_GENERATION_INDEX)?.unique);
    const changeIx = await db.collection(`${prefix}${CHANGES_COLLECTION}`).listIndexes().toArray();
    t.deepEqual(byName(changeIx).get(CHANGE_TIME_INDEX)?.key, { at: 1 });

    // A second store (another replica) ensuring the same indexes is fine.
    await storeOn(prefix, ringA, monitored).ensureIndexes();
  } finally {
    await monitored.close();
  }
});

test("the paged walk over the tokens (the sweep with change streams) is bounded per call and, over calls, complete", async (t) => {
  const prefix = newPrefix();
  const store = storeOn(prefix);
  const keys = Array.from({ length: 10 }, () => grantKey(uniqueSession("g")));
  for (const k of keys) for (let g = 1; g <= 4; g++) await store.insert(live(k, g));
  await store.insert({ key: at(keys, 0), generation: 5, reason: "revoked" });
  const col = client.db(DB).collection(`${prefix}${TOKENS_COLLECTION}`);
  const sweep = createGenerationSweep({
    tokens: col,
    run: createMongoRun(
      10_000,
      () => false,
      () => client.connect(),
    ),
    pageSize: 7,
    maxPages: 2,
  });
  const first = await sweep();
  t.true(first > 0 && first <= 14, `${first}`);
  let total = first;
  for (let i = 0; i < 10; i++) total += await sweep();
  t.is(total, 10 * 3 + 1);
  t.is(await col.countDocuments({}), 10);
  t.is((await store.getActive(at(keys, 0)))?.reason, "revoked");
  for (const k of keys.slice(1)) t.is((await store.getActive(k))?.generation, 4);
});

test("with the change log, sweep prunes the generations this store wrote and did not prune, drops records past the retention, and dead claims in bounded pages", async (t) => {
  const prefix = newPrefix();
  let wall = Date.now();
  const store = createMongoStore({
    client,
    dbName: DB,
    keyring: ringA,
    collectionPrefix: prefix,
    sweepPageSize: 7,
    sweepMaxPages: 2,
    changeLogMarginMs: 1_000,
    changeLogRetentionMs: 60_000,
    now: () => wall,
  });
  await store.prepare();
  t.is(store.feedMethod, external ? store.feedMethod : "change-log");
  const keys = Array.from({ length: 10 }, () => grantKey(uniqueSession("g")));
  for (const k of keys) for (let g = 1; g <= 4; g++) await store.insert(live(k, g));
  for (let i = 0; i < 30; i++) {
    await store.claim({ key: at(keys, 0), generation: 100 + i, owner: "x", leaseUntil: 10 });
  }
  const changes = client.db(DB).collection(`${prefix}${CHANGES_COLLECTION}`);
  // Written whatever the feed this store reads: another replica may read the log.
  t.is(await changes.countDocuments({}), 40);
  const first = await store.sweep(1_000);
  t.is(first.claims, 14);
  if (store.feedMethod === "change-log") t.is(first.generations, 30);
  for (let i = 0; i < 3; i++) await store.sweep(1_000);
  t.is(await client.db(DB).collection(`${prefix}${TOKENS_COLLECTION}`).countDocuments({}), 10);
  t.is(await client.db(DB).collection(`${prefix}${CLAIMS_COLLECTION}`).countDocuments({}), 0);
  if (store.feedMethod !== "change-log") return;
  // Pruned once: the next sweep prunes nothing; past the retention the records go.
  const k = at(keys, 1);
  await store.insert(live(k, 5));
  t.is(await store.pruneBelow(k, 5), 1, "the writer's own prune");
  t.is((await store.sweep(1_000)).generations, 0);
  t.is(await changes.countDocuments({}), 41);
  wall += 61_000;
  await store.sweep(1_000);
  t.is(await changes.countDocuments({}), 0);
});

test("a caller's abort rejects with its reason; an aborted signal sends nothing", async (t) => {
  const store = storeOn(newPrefix());
  const reason = new Error("caller gave up");
  const ac = new AbortController();
  ac.abort(reason);
  const key = grantKey(uniqueSession("g"));
  t.is(await t.throwsAsync(store.insert(live(key, 1), { signal: ac.signal })), reason);
  t.is(await t.throwsAsync(store.getActive(key, { signal: ac.signal })), reason);
  t.is(
    await t.throwsAsync(
      store.claim({ key, generation: 1, owner: "o", leaseUntil: 1 }, { signal: ac.signal }),
    ),
    reason,
  );
  t.is(await store.getActive(key), undefined);
});

test("options are validated at creation", (t) => {
  const base = { client, dbName: DB, keyring: ringA };
  t.throws(() => createMongoStore({ ...base, dbName: "" }), { message: /^dbName must be/ });
  t.throws(() => createMongoStore({ ...base, dbName: "a.b" }), { message: /^dbName must be/ });
  t.throws(() => createMongoStore({ ...base, collectionPrefix: "x-y" }), {
    message: /^collectionPrefix must be/,
  });
  t.throws(() => createMongoStore({ ...base, operationTimeoutMs: 0 }), {
    message: "operationTimeoutMs must be a positive integer, got 0",
  });
  t.throws(() => createMongoStore({ ...base, client: "http://x" }), { message: /^client must be/ });
});

const ferretOnly = external ? test.skip : test;

ferretOnly(
  "the database goes away: calls reject promptly; after a restart on the same port they work again",
  async (t) => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-mongo-outage-"));
    let server = await startFerretdb({ dataDir });
    const port = Number(new URL(server.uri).port);
    const store: MongoStore = createMongoStore({
      client: server.uri,
      dbName: "outage",
      keyring: ringA,
      operationTimeoutMs: 3_000,
      clientOptions: { serverSelectionTimeoutMS: 1_500 },
    });
    try {
      const key = sessionKey(uniqueSession(), "corp");
      await store.insert(live(key, 1));
      await server.stop();

      const tookMs: number[] = [];
      for (const call of [
        () => store.getActive(key),
        () => store.insert(live(key, 2)),
        () => store.activeGenerations([key]),
        () => store.claim({ key, generation: 1, owner: "o", leaseUntil: 1 }),
        () => store.releaseClaim({ key, generation: 1, owner: "o", leaseUntil: 1 }),
      ]) {
        const started = performance.now();
        const err = await t.throwsAsync(call(), { instanceOf: StoreError });
        tookMs.push(Math.round(performance.now() - started));
        t.is(err?.code, "UNAVAILABLE");
      }
      // Bounded by serverSelectionTimeoutMS (1.5 s), well inside the 3 s per-command bound.
      t.true(
        tookMs.every((ms) => ms < 2_500),
        `rejected after ${tookMs.join(", ")} ms`,
      );

      server = await startFerretdb({ dataDir, port });
      // The driver finds the server again on its own; allow it a few seconds.
      const deadline = performance.now() + 15_000;
      let got: Awaited<ReturnType<MongoStore["getActive"]>>;
      for (;;) {
        try {
          got = await store.getActive(key);
          break;
        } catch (err) {
          if (performance.now() > deadline) throw err;
        }
      }
      t.is(got?.generation, 1);
      t.deepEqual(await store.insert(live(key, 2)), { inserted: true });
    } finally {
      await store.close();
      await server.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  },
);

ferretOnly(
  "a database that stops answering (SIGSTOP): each call gives up at operationTimeoutMs, then recovers",
  async (t) => {
    const server = await startFerretdb();
    const store = createMongoStore({
      client: server.uri,
      dbName: "frozen",
      keyring: ringA,
      operationTimeoutMs: 1_000,
    });
    try {
      const key = grantKey(uniqueSession("g"));
      await store.insert(live(key, 1));
      process.kill(server.pid, "SIGSTOP"); // the socket stays open; nothing answers
      await stopped(server.pid);
      try {
        for (const call of [() => store.getActive(key), () => store.insert(live(key, 2))]) {
          const started = performance.now();
          const err = await t.throwsAsync(call(), { instanceOf: StoreError });
          const tookMs = performance.now() - started;
          t.is(err?.code, "UNAVAILABLE");
          t.is(err?.message.replace(/^mongo \S+ /, ""), "no answer within 1000 ms");
          t.true(tookMs >= 950 && tookMs < 2_500, `took ${Math.round(tookMs)} ms`);
        }
      } finally {
        process.kill(server.pid, "SIGCONT");
      }
      t.is((await store.getActive(key))?.generation, 1);
    } finally {
      await store.close();
      await server.stop();
    }
  },
);

/** Resolves once every thread of `pid` is stopped (a busy machine may take a moment). */
async function stopped(pid: number): Promise<void> {
  const state = async (task: string) => {
    const stat = await fs.readFile(`/proc/${pid}/task/${task}/stat`, "utf8").catch(() => ") T");
    return stat.slice(stat.lastIndexOf(")") + 2)[0];
  };
  for (let i = 0; i < 500; i++) {
    const tasks = await fs.readdir(`/proc/${pid}/task`);
    const states = await Promise.all(tasks.map(state));
    if (states.every((s) => s === "T" || s === "t")) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`process ${pid} did not stop`);
}

test("a store made from a URI owns its client and closes it; calls after close reject", async (t) => {
  const store = createMongoStore({
    client: mongo.uri,
    dbName: DB,
    keyring: ringA,
    collectionPrefix: newPrefix(),
  });
  const key = grantKey(uniqueSession("g"));
  await store.insert(live(key, 1));
  await store.close();
  await store.close();
  const err = await t.throwsAsync(store.getActive(key), { instanceOf: StoreError });
  t.is(err?.code, "UNAVAILABLE");
  t.regex(err?.message ?? "", /closed/);
});

test("the change feed: detected as the change log on FerretDB; one replica's writes reach another's feed, announced before they land; a window missed is a gap", async (t) => {
  const prefix = newPrefix();
  let wall = Date.now();
  const opts = {
    client,
    dbName: DB,
    keyring: ringA,
    collectionPrefix: prefix,
    changeLogMarginMs: 1_000,
    changeLogRetentionMs: 10_000,
    now: () => wall,
  };
  const a = createMongoStore(opts);
  const b = createMongoStore(opts);
  const feed = b.openChangeFeed();
  if (feed === undefined) return t.fail("a MongoDB store has a change feed");
  t.deepEqual(await feed.read(), { changes: [], gap: false });
  if (external) t.regex(String(feed.method), /^change-(log|stream)$/);
  else t.is(feed.method, "change-log");
  if (feed.method !== "change-log") return; // a replica set: the change stream (unit-tested)
  const key = sessionKey(uniqueSession(), "corp");
  await a.insert(live(key, 1));
  await a.insert({ key, generation: 2, reason: "revoked" });
  t.deepEqual((await feed.read()).changes, [
    { id: keyId(key), generation: 1, reason: "stored" },
    { id: keyId(key), generation: 2, reason: "revoked" },
  ]);
  // Within the margin a record is seen again; the sync de-duplicates by generation.
  wall += 500;
  t.is((await feed.read()).changes.length, 2);
  wall += 2_000;
  t.is((await feed.read()).changes.length, 2, "still within the margin of the previous read");
  wall += 2_000;
  t.deepEqual(await feed.read(), { changes: [], gap: false });
  // A lost insert race still announced its generation first: the record says only "look".
  await a.insert(live(key, 2, "loser"));
  t.deepEqual(
    (await feed.read()).changes.map((c) => c.generation),
    [2],
  );
  // Unread for longer than the log keeps records: a gap.
  wall += 20_000;
  t.true((await feed.read()).gap);
  t.false((await feed.read()).gap);
  await feed.close();
});

test("on FerretDB's PostgreSQL backend a NUL in a plaintext field is refused as FAILED, and nothing is stored", async (t) => {
  if (external) {
    t.pass("a real MongoDB stores it (the contract suite's round trip proves it)");
    return;
  }
  const store = storeOn(newPrefix());
  const key = sessionKey(uniqueSession(), "corp");
  const r = live(key, 1) as LiveRecord;
  const err = await t.throwsAsync(
    store.insert({ ...r, tokens: { ...r.tokens, subject: "a\u0000b" } }),
    { instanceOf: StoreError },
  );
  t.is(err?.code, "FAILED");
  t.is(await store.getActive(key), undefined);
});
