// The operator's tools against a cluster: replica processes (npm start's command) sharing one
// MongoDB-protocol server (FerretDB). Tokens preloaded from configuration are stored once by
// replicas starting together and never again; `tokenvend reencrypt` refuses while a live replica
// seals under another key, and re-seals once every replica runs the new primary.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import test from "ava";
import { StoreUpstreamTokensRequestSchema } from "../gen/tokenvend/v1/token_service_pb.js";
import { TOKENS_COLLECTION } from "../src/store/mongo-store.ts";
import { generateKey } from "../src/store/sealing.ts";
import { tokenvend } from "./support/cli.ts";
import { useMongo } from "./support/mongo.ts";
import { type ServerProcess, spawnServer } from "./support/server-process.ts";
import { api, getValid } from "./support/stack.ts";

const mongo = useMongo(test);
let dir: string;
let dbs = 0;
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "tokenvend-cli-mongo-"));
});
test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

// Short, so a killed replica ages out within the test; long enough that a loaded machine does not
// make a live replica miss 3 beats.
const HEARTBEAT_MS = 2_000;
const newDb = () => `cli_mongo_${process.pid}_${dbs++}`;

const yaml = (extra: string[] = []) =>
  [
    "grpc: { listen: 127.0.0.1:0 }",
    "http: { listen: 127.0.0.1:0 }",
    "logLevel: info",
    "auth: { disabled: true }",
    "shutdownGrace: 2s",
    `replicaHeartbeat: ${HEARTBEAT_MS}ms`,
    ...extra,
    "providers:",
    "  corp:",
    "    tokenEndpoint: http://127.0.0.1:9/token",
    "    clientId: tokenvend",
    "    authMethod: none",
    "  corp2:",
    "    tokenEndpoint: http://127.0.0.1:9/token",
    "    clientId: tokenvend",
    "    authMethod: none",
    "grants:",
    "  billing: { provider: corp }",
  ].join("\n");

async function replica(
  t: { teardown(fn: () => unknown): void },
  env: Record<string, string>,
  extra: string[] = [],
) {
  const r = await spawnServer(yaml(extra), env);
  t.teardown(() => r.kill("SIGKILL"));
  return r;
}

async function stop(r: ServerProcess) {
  r.kill("SIGTERM");
  return r.exited;
}

const bootstrapLog = (r: ServerProcess) =>
  r.logs.find((l) => typeof l.msg === "string" && l.msg.startsWith("bootstrap tokens")) as
    | { stored: number; present: number }
    | undefined;

const bootstrapDoc = [
  "sessions:",
  "  - { sessionId: ci-bot, provider: corp, accessToken: boot-at-1, refreshToken: boot-rt-1, expiresIn: 1h, scopes: [a], subject: bot }",
  "  - { sessionId: ops, provider: corp, refreshToken: boot-rt-2 }",
  "  - { sessionId: ops, provider: corp2, accessToken: boot-at-3, expiresAt: '2099-01-01T00:00:00Z' }",
  "grants:",
  "  - { grant: billing, accessToken: boot-grant, expiresIn: 30m }",
].join("\n");

test.serial(
  "bootstrap: two replicas starting together store each preloaded token once; restarts store nothing; later generations stay",
  async (t) => {
    const db = newDb();
    const file = join(dir, "bootstrap.yaml");
    await writeFile(file, bootstrapDoc, { mode: 0o600 });
    const env = {
      MONGODB_URI: mongo.uri,
      TOKENVEND_MONGODB_DB: db,
      TOKENVEND_ENCRYPTION_KEYS: `k:${generateKey()}`,
      TOKENVEND_BOOTSTRAP_FILE: file,
    };
    const start = () => spawnServer(yaml(), env);
    const [a, b] = await Promise.all([start(), start()]);
    t.teardown(() => a.kill("SIGKILL"));
    t.teardown(() => b.kill("SIGKILL"));
    const logs = [bootstrapLog(a), bootstrapLog(b)];
    t.deepEqual(
      logs.map((l) => (l?.stored ?? 0) + (l?.present ?? 0)),
      [4, 4],
    );
    t.is((logs[0]?.stored ?? 0) + (logs[1]?.stored ?? 0), 4, "each token stored exactly once");
    const tokens = mongo.client.db(db).collection(TOKENS_COLLECTION);
    t.is(await tokens.countDocuments({}), 4);
    t.is(await tokens.countDocuments({ generation: 1 }), 4);

    const cb = api(b.grpc);
    t.teardown(() => cb.close());
    const served = await cb.getValidTokens(getValid("ci-bot", "corp"));
    t.is(served.credential?.accessToken, "boot-at-1");
    t.deepEqual(served.credential?.scopes, ["a"]);
    // The session moves on: a login stores generation 2.
    await cb.storeUpstreamTokens(
      create(StoreUpstreamTokensRequestSchema, {
        sessionId: "ci-bot",
        provider: "corp",
        accessToken: "login-at",
        expiry: { case: "expiresIn", value: 600n },
      }),
    );
    t.is(await stop(a), 0);
    t.is(await stop(b), 0);

    // Restarted, with the same tokens given inline this time: nothing is written.
    const { TOKENVEND_BOOTSTRAP_FILE: _, ...inlineEnv } = env;
    const c = await spawnServer(yaml(), { ...inlineEnv, TOKENVEND_BOOTSTRAP: bootstrapDoc });
    t.teardown(() => c.kill("SIGKILL"));
    t.like(bootstrapLog(c), { stored: 0, present: 4 });
    // Generation 2 of ci-bot stays (the sweeper may have removed its generation 1 by now).
    t.is(await tokens.countDocuments({ generation: 2 }), 1);
    t.is(await tokens.countDocuments({ generation: 1, sessionId: { $ne: "ci-bot" } }), 3);
    const cc = api(c.grpc);
    t.teardown(() => cc.close());
    t.is((await cc.getValidTokens(getValid("ci-bot", "corp"))).credential?.accessToken, "login-at");
  },
);

test.serial(
  "reencrypt refuses while a live replica seals under another primary, and re-seals once every replica has the new one",
  async (t) => {
    const db = newDb();
    const oldKey = `old:${generateKey()}`;
    const newKey = `new:${generateKey()}`;
    const base = { MONGODB_URI: mongo.uri, TOKENVEND_MONGODB_DB: db };
    const onOld = await replica(t, { ...base, TOKENVEND_ENCRYPTION_KEYS: oldKey });
    const onOther = await replica(t, { ...base, TOKENVEND_ENCRYPTION_KEYS: oldKey });
    const c = api(onOld.grpc);
    t.teardown(() => c.close());
    await c.storeUpstreamTokens(
      create(StoreUpstreamTokensRequestSchema, {
        sessionId: "rotating",
        provider: "corp",
        accessToken: "under-old",
        refreshToken: "rt-under-old",
        expiry: { case: "expiresIn", value: 3600n },
      }),
    );
    const cli = { ...base, TOKENVEND_ENCRYPTION_KEYS: `${newKey},${oldKey}` };
    const cfg = join(dir, "cli.yaml");
    await writeFile(cfg, yaml());
    const run = (args: string[], env = cli) =>
      tokenvend(["reencrypt", "--config", cfg, ...args], { env });

    const refused = await run(["--json"]);
    t.is(refused.code, 1);
    const body = JSON.parse(refused.stdout) as {
      refused: { primaryKeyId: string; problem: string }[];
      liveReplicas: number;
    };
    t.is(body.liveReplicas, 2);
    t.deepEqual(
      body.refused.map((r) => [r.primaryKeyId, r.problem]),
      [
        ["old", "seals under another primary key"],
        ["old", "seals under another primary key"],
      ],
    );
    t.regex(refused.stderr, /2 live replica\(s\) do not seal under this keyring's primary key/);
    t.is(await mongo.client.db(db).collection(TOKENS_COLLECTION).countDocuments({ kid: "new" }), 0);

    // The refused run recorded the new key's id (a first use); the same id under other key
    // material is refused by the database's key check before any preflight (exit 2, naming it).
    const impostor = await run(["--json"], {
      ...cli,
      TOKENVEND_ENCRYPTION_KEYS: `new:${generateKey()},${oldKey}`,
    });
    t.is(impostor.code, 2);
    t.regex(
      impostor.stderr,
      /key id "new" has other key material than the one this database recorded/,
    );

    // Stopped cleanly, a replica removes its record at once; killed, it drops out after 3 beats.
    t.is(await stop(onOther), 0);
    onOld.kill("SIGKILL");
    await onOld.exited;
    const replicas = mongo.client.db(db).collection("replicas");
    const left = await replicas.find({}).toArray();
    t.deepEqual(
      left.map((d) => d.primaryKeyId),
      ["old"],
      "the killed replica's record stays; the stopped one's is gone",
    );
    const onNew = await replica(t, { ...base, TOKENVEND_ENCRYPTION_KEYS: `${newKey},${oldKey}` });
    // Past 3 heartbeats after the killed replica's last one, it is no longer live.
    const lastBeat = (left[0]?.seenAt as Date | undefined)?.getTime() ?? Date.now();
    await sleep(Math.max(0, lastBeat + 3 * HEARTBEAT_MS + 500 - Date.now()));
    const dry = await run(["--dry-run", "--json"]);
    t.is(dry.code, 0, dry.stderr);
    t.like(JSON.parse(dry.stdout), {
      liveReplicas: 1,
      scanned: 1,
      resealed: 1,
      fromKeys: { old: 1 },
    });
    const done = await run(["--json"]);
    t.is(done.code, 0, done.stderr);
    t.like(JSON.parse(done.stdout), { resealed: 1 });
    const doc = await mongo.client.db(db).collection(TOKENS_COLLECTION).findOne({});
    t.regex(String(doc?.accessToken), /^v1:new:/);
    const cn = api(onNew.grpc);
    t.teardown(() => cn.close());
    t.is(
      (await cn.getValidTokens(getValid("rotating", "corp"))).credential?.accessToken,
      "under-old",
    );
  },
);
