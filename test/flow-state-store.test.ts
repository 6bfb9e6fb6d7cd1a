// The flow state store's contract, run over its three adapters (memory, file, and MongoDB on a
// real FerretDB): create succeeds for exactly one writer of an id, remove is true for exactly
// one caller, replace changes only an existing record, sweep drops expired records; and what
// the file and MongoDB adapters write carries no secret in clear. The MongoDB token store
// answers unusedSessions from its `provider_issued` index.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import test from "ava";
import { MongoClient } from "mongodb";
import type { FlowRecord, FlowStateStore } from "../src/core/flow-state-store.ts";
import { createFileFlowStates, FLOWS_FILE } from "../src/store/flow-state-file.ts";
import { createMemoryFlowStates } from "../src/store/flow-state-memory.ts";
import {
  createMongoFlowStates,
  EXPIRES_INDEX,
  FLOWS_COLLECTION,
} from "../src/store/flow-state-mongo.ts";
import { createMongoStore } from "../src/store/mongo-store.ts";
import { PROVIDER_ISSUED_INDEX } from "../src/store/mongo-unused.ts";
import { createKeyring } from "../src/store/sealing.ts";
import { mongoForTests, type TestMongo } from "./support/mongo.ts";

const DB = `tokenvend_flow_states_${process.pid}`;
const keyring = createKeyring([{ id: "k", key: randomBytes(32) }]);
const secret = `verifier-${randomBytes(12).toString("hex")}`;
let mongo: TestMongo;
let client: MongoClient;
let seq = 0;
const dirs: string[] = [];

test.before(async () => {
  mongo = await mongoForTests();
  client = await new MongoClient(mongo.uri).connect();
});
test.after.always(async () => {
  await client
    ?.db(DB)
    .dropDatabase()
    .catch(() => {});
  await client?.close();
  await mongo?.stop();
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});

const newDir = async () => {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-flows-"));
  dirs.push(d);
  return d;
};

const adapters: Record<string, () => Promise<FlowStateStore>> = {
  memory: async () => createMemoryFlowStates(),
  file: async () => createFileFlowStates({ dir: await newDir(), keyring }),
  mongo: async () =>
    createMongoFlowStates({ client, dbName: DB, keyring, collectionPrefix: `t${seq++}_` }),
};

const record = (id: string, expiresAt: number, extra: Partial<FlowRecord> = {}): FlowRecord => ({
  id,
  expiresAt,
  fields: { kind: "authorization", sessionId: "s1", scopes: ["openid"], n: 1 },
  secrets: { codeVerifier: secret },
  ...extra,
});

for (const [name, open] of Object.entries(adapters)) {
  test(`${name}: a record is created once and reads back whole`, async (t) => {
    const s = await open();
    t.true(await s.create(record("auth:a", 2_000)));
    t.false(await s.create(record("auth:a", 3_000, { fields: { other: true } })));
    t.deepEqual(await s.get("auth:a"), record("auth:a", 2_000));
    t.is(await s.get("auth:none"), undefined);
    await s.close();
  });

  test(`${name}: of concurrent creators and removers, exactly one wins each`, async (t) => {
    const s = await open();
    const created = await Promise.all(
      Array.from({ length: 8 }, () => s.create(record("used:x", 2_000))),
    );
    t.is(created.filter(Boolean).length, 1);
    const removed = await Promise.all(Array.from({ length: 8 }, () => s.remove("used:x")));
    t.is(removed.filter(Boolean).length, 1);
    t.is(await s.get("used:x"), undefined);
    await s.close();
  });

  test(`${name}: replace changes an existing record only; sweep removes expired ones`, async (t) => {
    const s = await open();
    t.false(await s.replace(record("device:a", 2_000)));
    await s.create(record("device:a", 2_000));
    t.true(await s.replace(record("device:a", 5_000, { fields: { status: "failed" } })));
    t.deepEqual((await s.get("device:a"))?.fields, { status: "failed" });
    await s.create(record("auth:old", 1_000));
    t.is(await s.sweep(4_000), 1);
    t.is(await s.get("auth:old"), undefined);
    t.truthy(await s.get("device:a"));
    await s.close();
  });
}

test("file: the state survives a reopen, mode 0600, no secret in clear; expired records are dropped", async (t) => {
  const dir = await newDir();
  const a = await createFileFlowStates({ dir, keyring });
  await a.create(record("auth:keep", Date.now() + 60_000));
  await a.create(record("auth:gone", Date.now() - 1));
  await a.close();
  const text = await fs.readFile(path.join(dir, FLOWS_FILE), "utf8");
  t.false(text.includes(secret));
  t.is((await fs.stat(path.join(dir, FLOWS_FILE))).mode & 0o777, 0o600);
  const b = await createFileFlowStates({ dir, keyring });
  t.is((await b.get("auth:keep"))?.secrets.codeVerifier, secret);
  t.is(await b.get("auth:gone"), undefined);
  await b.close();
});

test("mongo: secrets are sealed at rest and bound to their record; expiresAt is indexed", async (t) => {
  const prefix = `raw${seq++}_`;
  const s = createMongoFlowStates({ client, dbName: DB, keyring, collectionPrefix: prefix });
  await s.create(record("auth:raw", 2_000));
  const col = client.db(DB).collection(`${prefix}${FLOWS_COLLECTION}`);
  const raw = await col.findOne({ _id: "auth:raw" as never });
  t.false(JSON.stringify(raw).includes(secret));
  // A sealed value moved to another record does not open.
  await col.insertOne({ ...raw, _id: "auth:moved" as never });
  await t.throwsAsync(() => s.get("auth:moved"));
  const names = (await col.listIndexes().toArray()).map((i) => i.name);
  t.true(names.includes(EXPIRES_INDEX));
  await s.close();
});

test("mongo: unusedSessions creates and uses the provider_issued index", async (t) => {
  const prefix = `u${seq++}_`;
  const store = createMongoStore({ client, dbName: DB, keyring, collectionPrefix: prefix });
  t.deepEqual(await store.unusedSessions("p", { before: Date.now(), limit: 5 }), []);
  const names = (await client.db(DB).collection(`${prefix}tokens`).listIndexes().toArray()).map(
    (i) => i.name,
  );
  t.true(names.includes(PROVIDER_ISSUED_INDEX));
  await store.close();
});
