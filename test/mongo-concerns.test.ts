// Every command the MongoDB adapters send on tokenvend's collections carries the concerns
// docs/STORAGE.md gives it: writes `w: majority`, reads read concern `majority`, so nothing
// acknowledged or read can roll back after a failover. Read from the driver's command monitoring.

import { randomBytes } from "node:crypto";
import test from "ava";
import { type CommandStartedEvent, MongoClient } from "mongodb";
import { sessionKey } from "../src/core/token.ts";
import { createMongoFlowStates } from "../src/store/flow-state-mongo.ts";
import { replicaRegistryOf } from "../src/store/mongo-replicas.ts";
import { createMongoStore } from "../src/store/mongo-store.ts";
import { createKeyring } from "../src/store/sealing.ts";
import { mongoForTests } from "./support/mongo.ts";
import { live, uniqueSession } from "./support/store-contract.ts";

const writes = new Set(["insert", "update", "delete", "findAndModify"]);
const reads = new Set(["find", "aggregate", "count", "distinct"]);
// A change stream returns majority-committed changes only, whatever the command says.
const isChangeStream = (c: CommandStartedEvent) =>
  JSON.stringify(c.command.pipeline ?? []).includes('"$changeStream"');

test("tokens, claims, change log, key check, flow state and replica registry: majority writes and reads", async (t) => {
  const mongo = await mongoForTests();
  t.teardown(() => mongo.stop());
  const client = await new MongoClient(mongo.uri, { monitorCommands: true }).connect();
  t.teardown(() => client.close());
  const commands: CommandStartedEvent[] = [];
  client.on("commandStarted", (e) => commands.push(e));
  const dbName = `tokenvend_concerns_${process.pid}`;
  const keyring = createKeyring([{ id: "a", key: randomBytes(32) }]);
  const store = createMongoStore({ client, dbName, keyring });
  t.teardown(() => store.close());
  await store.prepare();
  const session = uniqueSession();
  const key = sessionKey(session, "corp");
  await store.insert(live(key, 1));
  await store.getActive(key);
  await store.getSession(session);
  const claim = { key, generation: 1, owner: "r1", leaseUntil: Date.now() + 10_000 };
  await store.claim(claim);
  await store.releaseClaim(claim);
  await store.insert(live(key, 2));
  await store.pruneBelow(key, 2);

  const registry = replicaRegistryOf(store);
  if (registry === undefined) return t.fail("the MongoDB store has a replica registry");
  await registry.announce({ id: "r1", host: "h", pid: 1, startedAt: Date.now() });
  await registry.live(60_000);
  await registry.withdraw("r1");

  const flows = createMongoFlowStates({ client, dbName, keyring });
  t.teardown(() => flows.close());
  const flow = { id: "f1", expiresAt: Date.now() + 60_000, fields: { kind: "x" }, secrets: {} };
  await flows.create(flow);
  await flows.get("f1");
  await flows.replace(flow);
  await flows.remove("f1");

  const seen = new Set<string>();
  for (const c of commands) {
    if (c.databaseName !== dbName) continue;
    const collection = String(c.command[c.commandName]);
    if (writes.has(c.commandName)) {
      seen.add(`${c.commandName} ${collection}`);
      t.is(c.command.writeConcern?.w, "majority", `${c.commandName} on ${collection}`);
    } else if (reads.has(c.commandName) && !isChangeStream(c)) {
      seen.add(`${c.commandName} ${collection}`);
      t.is(
        c.command.readConcern?.level,
        "majority",
        `${c.commandName} on ${collection}: ${JSON.stringify(c.command.pipeline ?? c.command.filter)}`,
      );
    }
  }
  // The walk above reached every collection, for writes and reads both.
  for (const col of ["tokens", "claims", "replicas", "flows", "keys"]) {
    t.true(
      [...seen].some((s) => s.endsWith(col) && [...writes].some((w) => s.startsWith(w))),
      `a write on ${col}: ${[...seen].join(", ")}`,
    );
  }
  for (const col of ["tokens", "replicas", "flows"]) {
    t.true(
      [...seen].some((s) => s.endsWith(col) && [...reads].some((r) => s.startsWith(r))),
      `a read on ${col}: ${[...seen].join(", ")}`,
    );
  }
});
