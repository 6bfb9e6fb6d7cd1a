// Proves, against a real server, the MongoDB primitives the store relies on. Runs on FerretDB
// (started here, PostgreSQL backend) by default, or on a real MongoDB when MONGODB_URI is set;
// then the harness itself: FerretDB's restarts and data directories on both backends, and the
// private PostgreSQL that never outlives its FerretDB.

import * as fs from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import test from "ava";
import { type Collection, type Document, MongoClient, MongoServerError } from "mongodb";
import { startFerretdb } from "../scripts/ferretdb.ts";
import { mongoForTests, type TestMongo } from "./support/mongo.ts";

const DB = "tokenvend_ferretdb_test";
const external = Boolean(process.env.MONGODB_URI);

let mongo: TestMongo;
let client: MongoClient;

test.before(async () => {
  mongo = await mongoForTests();
  client = await new MongoClient(mongo.uri, { serverSelectionTimeoutMS: 10_000 }).connect();
  await client.db(DB).dropDatabase();
});

test.after.always(async () => {
  // Close the client first: FerretDB gives connected clients a few seconds before it stops.
  await client?.close();
  await mongo?.stop();
});

async function freshCollection(name: string): Promise<Collection<Document>> {
  const col = client.db(DB).collection(name);
  await col.drop().catch(() => {});
  // One index per createIndexes call: the portable way (each call is its own command).
  await col.createIndex({ key: 1, generation: 1 }, { unique: true, name: "key_generation" });
  return col;
}

const isDuplicateKey = (err: unknown): boolean =>
  err instanceof MongoServerError && err.code === 11000;

test("createIndexes makes a unique compound index, and repeating it is a no-op", async (t) => {
  const col = await freshCollection("indexes");
  await col.createIndex({ key: 1, generation: 1 }, { unique: true, name: "key_generation" });
  await col.createIndex({ expiresAt: 1 }, { name: "expires_at" });

  const indexes = await col.listIndexes().toArray();
  const byName = new Map(indexes.map((ix) => [ix.name as string, ix]));
  t.deepEqual(byName.get("key_generation")?.key, { key: 1, generation: 1 });
  t.true(byName.get("key_generation")?.unique);
  t.deepEqual(byName.get("expires_at")?.key, { expiresAt: 1 });
  t.falsy(byName.get("expires_at")?.unique);
});

test("insertOne of a duplicate key fails with code 11000", async (t) => {
  const col = await freshCollection("duplicates");
  await col.insertOne({ key: "s1/p", generation: 1, token: "a" });
  await col.insertOne({ key: "s1/p", generation: 2, token: "b" });
  await col.insertOne({ key: "s2/p", generation: 1, token: "c" });

  const err = await t.throwsAsync(col.insertOne({ key: "s1/p", generation: 2, token: "loser" }));
  t.true(isDuplicateKey(err), `expected code 11000, got ${(err as MongoServerError).code}`);
  // Numbers compare by value across BSON types, in the unique index too.
  const asDouble = await t.throwsAsync(col.insertOne({ key: "s2/p", generation: 1.0 }));
  t.true(isDuplicateKey(asDouble));
  // The loser wrote nothing.
  t.is(await col.countDocuments({ key: "s1/p" }), 2);
  t.is((await col.findOne({ key: "s1/p", generation: 2 }))?.token, "b");
});

test("concurrent inserts of the same key: exactly one wins, the others get 11000", async (t) => {
  const col = await freshCollection("race");
  const others = await Promise.all([1, 2, 3].map(() => new MongoClient(mongo.uri).connect()));
  try {
    const cols = [col, ...others.map((c) => c.db(DB).collection("race"))];
    for (let generation = 1; generation <= 10; generation++) {
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) =>
          (cols[i % cols.length] as Collection).insertOne({ key: "k", generation, who: i }),
        ),
      );
      const won = results.filter((r) => r.status === "fulfilled");
      const lost = results.filter((r) => r.status === "rejected");
      t.is(won.length, 1, `generation ${generation}`);
      t.true(lost.every((r) => isDuplicateKey(r.reason)));
    }
    t.is(await col.countDocuments({ key: "k" }), 10);
  } finally {
    await Promise.all(others.map((c) => c.close()));
  }
});

test("deleteOne reports deletedCount 1, then 0; a concurrent delete has one winner", async (t) => {
  const col = await freshCollection("deletes");
  await col.insertOne({ key: "s1/p", generation: 1 });

  t.is((await col.deleteOne({ key: "s1/p", generation: 1 })).deletedCount, 1);
  t.is((await col.deleteOne({ key: "s1/p", generation: 1 })).deletedCount, 0);
  t.is(await col.countDocuments({ key: "s1/p" }), 0);

  for (let generation = 1; generation <= 10; generation++) {
    await col.insertOne({ key: "race", generation });
    const results = await Promise.all(
      Array.from({ length: 6 }, () => col.deleteOne({ key: "race", generation })),
    );
    t.is(
      results.reduce((n, r) => n + r.deletedCount, 0),
      1,
    );
  }
});

test("find sorted by generation desc with limit 1 returns the newest", async (t) => {
  const col = await freshCollection("latest");
  // Inserted out of order, with another key in between.
  for (const generation of [3, 1, 10, 2, 9]) {
    await col.insertOne({ key: "s1/p", generation, token: `t${generation}` });
  }
  await col.insertOne({ key: "s2/p", generation: 99, token: "other" });

  const [latest, ...rest] = await col
    .find({ key: "s1/p" })
    .sort({ generation: -1 })
    .limit(1)
    .toArray();
  t.is(rest.length, 0);
  t.is(latest?.generation, 10);
  t.is(latest?.token, "t10");
  t.is(await col.findOne({ key: "none" }, { sort: { generation: -1 } }), null);
});

test("$in fetches several keys in one query", async (t) => {
  const col = await freshCollection("in");
  for (const key of ["s1/a", "s1/b", "s1/c", "s2/a"]) {
    for (const generation of [1, 2]) await col.insertOne({ key, generation });
  }
  const docs = await col
    .find({ key: { $in: ["s1/a", "s1/b", "s1/c", "s1/missing"] } }, { projection: { _id: 0 } })
    .sort({ key: 1, generation: -1 })
    .toArray();
  t.deepEqual(
    docs.map((d) => `${d.key}@${d.generation}`),
    ["s1/a@2", "s1/a@1", "s1/b@2", "s1/b@1", "s1/c@2", "s1/c@1"],
  );
});

const ferretOnly = external ? test.skip : test;

test("writes with write concern majority and reads with read concern majority are accepted", async (t) => {
  const col = await freshCollection("concerns");
  await col.insertOne({ key: "k", generation: 1 }, { writeConcern: { w: "majority" } });
  const [doc] = await col.find({ key: "k" }, { readConcern: { level: "majority" } }).toArray();
  t.is(doc?.generation, 1);
  t.is((await col.deleteOne({ key: "k" }, { writeConcern: { w: "majority" } })).deletedCount, 1);
});

for (const backend of ["postgresql", "sqlite"] as const) {
  ferretOnly(
    `${backend}: FerretDB stops and restarts on the same data dir and port; data survives`,
    async (t) => {
      const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-ferretdb-restart-"));
      try {
        const first = await startFerretdb({ backend, dataDir });
        const port = Number(new URL(first.uri).port);
        const c1 = await new MongoClient(first.uri).connect();
        await c1.db(DB).collection("persist").insertOne({ key: "k", generation: 7 });
        await c1.close();
        await first.stop();
        await first.stop(); // idempotent
        t.throws(() => process.kill(first.pid, 0)); // the process is gone

        // Nothing listens on the port any more.
        await t.throwsAsync(connectOnce(port));

        const second = await startFerretdb({ backend, dataDir, port });
        t.is(second.uri, first.uri);
        const c2 = await new MongoClient(second.uri).connect();
        t.is((await c2.db(DB).collection("persist").findOne({ key: "k" }))?.generation, 7);
        await c2.close();
        await second.stop();
      } finally {
        await fs.rm(dataDir, { recursive: true, force: true });
      }
    },
  );

  ferretOnly(`${backend}: a temp data dir is removed on stop`, async (t) => {
    const server = await startFerretdb({ backend });
    const c = await new MongoClient(server.uri).connect();
    await c.db(DB).collection("x").insertOne({ a: 1 });
    await c.close();
    const dirs = await dataDirsOf(server.pid);
    t.is(dirs.length, 1);
    await fs.access(dirs[0] as string);
    await server.stop();
    await t.throwsAsync(fs.access(dirs[0] as string));
  });
}

ferretOnly(
  "the private PostgreSQL runs unprivileged and dies with a FerretDB killed by SIGKILL",
  async (t) => {
    const server = await startFerretdb();
    const [postgres] = await childrenOf(server.pid);
    t.truthy(postgres, "a postgres child");
    const uid = Number(
      /^Uid:\s+(\d+)/m.exec(await fs.readFile(`/proc/${postgres}/status`, "utf8"))?.[1],
    );
    t.not(uid, 0, "not root");
    process.kill(server.pid, "SIGKILL");
    let alive = true;
    for (let i = 0; i < 200 && alive; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      alive = await fs.access(`/proc/${postgres}`).then(
        () => true,
        () => false,
      );
    }
    t.false(alive, "postgres exited");
    await server.stop();
  },
);

ferretOnly("a server that cannot start fails with its stderr in the error", async (t) => {
  const busy = net.createServer();
  await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
  const { port } = busy.address() as net.AddressInfo;
  try {
    const err = await t.throwsAsync(startFerretdb({ port }));
    t.regex(err?.message ?? "", /exited before it was ready/);
    t.regex(err?.message ?? "", /address already in use/);
  } finally {
    busy.close();
  }
});

function connectOnce(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.end();
      resolve();
    });
    socket.on("error", reject);
  });
}

/** The data directory argument of a running server (Linux /proc). */
async function dataDirsOf(pid: number): Promise<string[]> {
  const argv = (await fs.readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
  const i = argv.findIndex((a) => a === "-sqlite-dir" || a === "-postgresql-data");
  return i >= 0 && argv[i + 1] ? [argv[i + 1] as string] : [];
}

/** The pids whose parent is `pid`. */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const task of await fs.readdir(`/proc/${pid}/task`)) {
    const text = await fs.readFile(`/proc/${pid}/task/${task}/children`, "utf8").catch(() => "");
    out.push(...text.split(/\s+/).filter(Boolean).map(Number));
  }
  return out;
}
