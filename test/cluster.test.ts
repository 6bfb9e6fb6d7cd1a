// A cluster: replica processes sharing nothing but one MongoDB-protocol server
// (FerretDB), in front of the real oidc-provider with refresh-token rotation.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { MongoClient } from "mongodb";
import {
  RevokeSessionRequestSchema,
  StoreUpstreamTokensRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { startFerretdb } from "../scripts/ferretdb.ts";
import { createMongoStore } from "../src/store/mongo-store.ts";
import { generateKey, parseKeyring } from "../src/store/sealing.ts";
import { clusterKey, startCluster } from "./support/cluster.ts";
import { mongoForTests } from "./support/mongo.ts";
import { api, getValid, grpcFailure, startStack } from "./support/stack.ts";

let mongo: { uri: string; stop(): Promise<void> };
test.before(async () => {
  mongo = await mongoForTests();
});
test.after.always(async () => {
  await mongo?.stop();
});

test.serial(
  "3 replicas x 300 concurrent callers on an expired token: one refresh, one token, no invalid_grant",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 3);
    const minted = await c.store("sess-herd", 2);
    const all = await Promise.all(
      c.clients.flatMap((client) =>
        Array.from({ length: 300 }, () => client.getValidTokens(getValid("sess-herd"))),
      ),
    );
    t.is(c.idp.counters.tokenRequests.refresh_token, 1);
    t.is(c.idp.counters.invalidGrant, 0);
    const tokens = new Set(all.map((r) => r.credential?.accessToken));
    t.is(tokens.size, 1);
    t.false(tokens.has(minted.accessToken));
    t.true(all.every((r) => r.credential?.generation === 2n));
  },
);

test.serial(
  "the claim holder killed mid-refresh: another replica takes over after the lease; the key is not stuck",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2, {
      extraYaml: ["claimLease: 6s", "refreshTimeout: 1s"],
    });
    await c.store("sess-kill", 2);
    c.proxy.delayMs = 1_500;
    // Replica 0 claims and holds the refresh at the slowed token endpoint.
    const doomed = c.clients[0]!.getValidTokens(getValid("sess-kill")).catch((e: unknown) => e);
    await sleep(400);
    c.replicas[0]!.kill("SIGKILL");
    c.proxy.delayMs = 0;
    const startedAt = Date.now();
    // Replica 1 waits for the dead claim's lease, takes over, and redeems the token once.
    const res = await c.clients[1]!.getValidTokens(getValid("sess-kill"), { deadlineMs: 20_000 });
    t.is(res.credential?.generation, 2n);
    t.true(Date.now() - startedAt >= 1_000, "waited for the lease");
    t.is(c.idp.counters.invalidGrant, 0);
    t.is(c.idp.counters.tokenRequests.refresh_token, 1);
    t.truthy(await doomed);
    // Not stuck: the next callers are served at once.
    const again = await c.clients[1]!.getValidTokens(getValid("sess-kill"));
    t.is(again.credential?.accessToken, res.credential?.accessToken);
  },
);

test.serial(
  "a revocation on replica A ends service of that token on replica B within the sync bound",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2);
    const minted = await c.store("sess-rev", 300);
    const [a, b] = c.clients as [ReturnType<typeof api>, ReturnType<typeof api>];
    t.is(
      (await b.getValidTokens(getValid("sess-rev"))).credential?.accessToken,
      minted.accessToken,
    );
    await a.revokeSession(create(RevokeSessionRequestSchema, { sessionId: "sess-rev" }));
    const revokedAt = Date.now();
    let code = status.OK;
    while (Date.now() - revokedAt < 5_000) {
      try {
        await b.getValidTokens(getValid("sess-rev"));
      } catch (err) {
        code = grpcFailure(err).code;
        break;
      }
      await sleep(50);
    }
    const elapsed = Date.now() - revokedAt;
    t.is(code, status.NOT_FOUND);
    // The default bound is 1 s; allow the check's own round trips on a busy machine.
    t.true(elapsed < 2_000, `visible on B after ${elapsed} ms`);
  },
);

test.serial(
  "a renewal on replica A reaches replica B's cache without a provider call",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2);
    await c.store("sess-renew", 2);
    const [a, b] = c.clients as [ReturnType<typeof api>, ReturnType<typeof api>];
    const renewed = await a.getValidTokens(getValid("sess-renew"));
    const seen = await b.getValidTokens(getValid("sess-renew"));
    t.is(seen.credential?.accessToken, renewed.credential?.accessToken);
    t.is(c.idp.counters.tokenRequests.refresh_token, 1);
  },
);

/** A FerretDB of the test's own, which it can stop and start again on the same port and data. */
async function restartableFerretdb(t: ExecutionContext, name: string) {
  const dataDir = await mkdtemp(join(tmpdir(), `tokenvend-${name}-`));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const own = await startFerretdb({ dataDir });
  t.teardown(() => own.stop());
  const port = Number(new URL(own.uri).port);
  return {
    uri: own.uri,
    stop: () => own.stop(),
    async start() {
      const back = await startFerretdb({ port, dataDir });
      t.teardown(() => back.stop());
    },
  };
}

test.serial(
  "MongoDB stopped and restarted: no crash, cached tokens served in the outage, writes resume after",
  async (t) => {
    const own = await restartableFerretdb(t, "outage");
    const c = await startCluster(t, own.uri, 1);
    const minted = await c.store("sess-outage", 300);
    const client = c.clients[0]!;
    t.is(
      (await client.getValidTokens(getValid("sess-outage"))).credential?.accessToken,
      minted.accessToken,
    );
    await own.stop();

    t.is(
      (await client.getValidTokens(getValid("sess-outage"))).credential?.accessToken,
      minted.accessToken,
    );
    const write = await t.throwsAsync(
      client.storeUpstreamTokens(
        create(StoreUpstreamTokensRequestSchema, {
          sessionId: "sess-outage-2",
          provider: "idp",
          accessToken: "at",
          expiry: { case: "expiresIn", value: 300n },
        }),
        { deadlineMs: 15_000 },
      ),
    );
    t.deepEqual(grpcFailure(write), {
      code: status.UNAVAILABLE,
      reason: "STORE_UNAVAILABLE",
      fields: [],
    });
    t.is(c.replicas[0]!.child.exitCode, null, "still running");

    await own.start();
    let ok = false;
    for (let i = 0; i < 60 && !ok; i++) {
      try {
        await c.store("sess-after", 300);
        ok = true;
      } catch {
        await sleep(250);
      }
    }
    t.true(ok, "writes resume after the restart");
    t.truthy((await client.getValidTokens(getValid("sess-after"))).credential?.accessToken);
  },
);

test.serial("a cache hit costs zero MongoDB commands (sync and sweep held off)", async (t) => {
  const client = new MongoClient(mongo.uri, { monitorCommands: true });
  await client.connect();
  t.teardown(() => client.close());
  const store = createMongoStore({
    client,
    dbName: `cachehit_${process.pid}_${Date.now()}`,
    keyring: parseKeyring(clusterKey),
  });
  await store.ensureIndexes();
  // No sync or sweep tick may land among the calls: only the calls are counted.
  const s = await startStack({ store, config: { syncInterval: "1h", sweepInterval: "1h" } });
  t.teardown(s.stop);
  await s.store("sess-hit", await s.mint(), 300);
  await s.client.getValidTokens(getValid("sess-hit"));
  const commands: string[] = [];
  client.on("commandStarted", (e) => commands.push(e.commandName));
  for (let i = 0; i < 50; i++) await s.client.getValidTokens(getValid("sess-hit"));
  t.deepEqual(commands, []);
});

test.serial(
  "each replica detects its change feed at start and logs it: the change log on FerretDB",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 1);
    await c.store("sess-feed", 300);
    const line = c.replicas[0]!.logs.find(
      (l) => typeof l.msg === "string" && l.msg.startsWith("store change feed"),
    );
    t.truthy(line, "logged");
    t.is(line?.method, process.env.MONGODB_URI ? line?.method : "change-log");
    t.regex(String(line?.method), /^change-(log|stream)$/);
  },
);

test.serial(
  "a replica with a known key id but other key material refuses to start (exit 2), naming the id",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 1);
    await c.store("sess-keys", 300);
    const err = await t.throwsAsync(
      c.spawn({ TOKENVEND_ENCRYPTION_KEYS: `primary:${generateKey()}` }),
    );
    t.regex(err?.message ?? "", /exited early \(2\)/);
    t.regex(err?.message ?? "", /key id "primary" has other key material/);
    // The same key under a new id, after the recorded one, starts: rotation still works.
    const rotated = await c.spawn({
      TOKENVEND_ENCRYPTION_KEYS: `next:${generateKey()},${clusterKey}`,
    });
    t.is(rotated.child.exitCode, null);
  },
);

test.serial(
  "a replica started while MongoDB is down stores sessions once it answers again, and the others read them",
  async (t) => {
    const own = await restartableFerretdb(t, "late-db");
    const c = await startCluster(t, own.uri, 1);
    await own.stop();
    const late = await c.spawn();
    await own.start();
    const lateApi = api(late.grpc);
    t.teardown(() => lateApi.close());
    const minted = await c.idp.mintRefreshToken({
      clientId: c.idp.client("tokenvend").clientId,
      accountId: "alice",
    });
    await lateApi.storeUpstreamTokens(
      create(StoreUpstreamTokensRequestSchema, {
        sessionId: "sess-late-db",
        provider: "idp",
        accessToken: minted.accessToken,
        refreshToken: minted.refreshToken,
        expiry: { case: "expiresIn", value: 300n },
      }),
      { deadlineMs: 20_000 },
    );
    const res = await c.clients[0]!.getValidTokens(getValid("sess-late-db"));
    t.is(res.credential?.accessToken, minted.accessToken);
  },
);

test.serial(
  "a key mismatch met only once MongoDB answers again (unreachable at the start): the replica stops with exit 2",
  async (t) => {
    const own = await restartableFerretdb(t, "late-key");
    const c = await startCluster(t, own.uri, 1);
    await c.store("sess-late-key", 300);
    await own.stop();
    const late = await c.spawn({ TOKENVEND_ENCRYPTION_KEYS: `primary:${generateKey()}` });
    t.is(late.child.exitCode, null, "it serves what it can while the database is down");
    await own.start();
    // The start-up work is retried every 5 s; then the replica drains and exits.
    const code = await Promise.race([late.exited, sleep(30_000).then(() => "still running")]);
    t.is(code, 2);
    t.true(
      late.logs.some((l) => l.msg === "the MongoDB store refuses this keyring"),
      "the refusal is logged",
    );
  },
);

test.serial(
  "a stored token that does not open is DATA_LOSS / TOKEN_UNREADABLE, logged and counted; the session can still be revoked and stored again",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2);
    await c.store("sess-lost", 300);
    await c.store("sess-other", 300);
    // An altered document: the ciphertext of another session moved into this one.
    const client = await new MongoClient(mongo.uri).connect();
    t.teardown(() => client.close());
    const tokens = client.db(c.db).collection("tokens");
    const other = await tokens.findOne({ sessionId: "sess-other" });
    await tokens.updateOne(
      { sessionId: "sess-lost" },
      { $set: { accessToken: other?.accessToken } },
    );
    const b = c.clients[1]!;
    const err = grpcFailure(await t.throwsAsync(b.getValidTokens(getValid("sess-lost"))));
    t.deepEqual(err, { code: status.DATA_LOSS, reason: "TOKEN_UNREADABLE", fields: [] });
    // The log line comes through the replica's stdout, which may arrive after the answer.
    const find = () => c.replicas[1]!.logs.find((l) => l.msg === "a stored token cannot be opened");
    for (let i = 0; i < 100 && find() === undefined; i++) await sleep(50);
    const logged = find();
    t.is(logged?.reason, "DECRYPT_FAILED");
    t.is(logged?.level, 50); // error
    // Revocation finds the generation without opening it.
    const revoked = await b.revokeSession(
      create(RevokeSessionRequestSchema, { sessionId: "sess-lost" }),
    );
    t.deepEqual(revoked.revokedProviders, ["idp"]);
    t.is(
      grpcFailure(await t.throwsAsync(b.getValidTokens(getValid("sess-lost")))).code,
      status.NOT_FOUND,
    );
    // And a new login stores over it.
    const minted = await c.store("sess-lost", 300);
    t.is(
      (await b.getValidTokens(getValid("sess-lost"))).credential?.accessToken,
      minted.accessToken,
    );
  },
);
