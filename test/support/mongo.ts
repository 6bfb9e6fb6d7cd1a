// The MongoDB the tests run against: a real MongoDB when MONGODB_URI is set (stop() leaves it
// alone), otherwise a fresh FerretDB on its PostgreSQL backend (a private PostgreSQL in a temp
// data dir, scripts/ferretdb.ts) started for the caller and removed again by stop().

import type { TestFn } from "ava";
import { MongoClient } from "mongodb";
import { startFerretdb } from "../../scripts/ferretdb.ts";

export interface TestMongo {
  /** Connection string, e.g. `mongodb://127.0.0.1:PORT/`. Use a unique database name per test file. */
  uri: string;
  /** Stops the FerretDB this call started; a no-op for an external MONGODB_URI. */
  stop(): Promise<void>;
}

export async function mongoForTests(): Promise<TestMongo> {
  const external = process.env.MONGODB_URI;
  if (external) return { uri: external, stop: async () => {} };
  const server = await startFerretdb();
  return { uri: server.uri, stop: server.stop };
}

/**
 * A MongoDB-protocol server and a connected client for the tests of one file, started before
 * them; `db` (when given) is dropped after them.
 */
export function useMongo(
  test: TestFn,
  db?: string,
): { readonly uri: string; readonly client: MongoClient } {
  let mongo: TestMongo | undefined;
  let client: MongoClient | undefined;
  test.before(async () => {
    mongo = await mongoForTests();
    client = await new MongoClient(mongo.uri, { serverSelectionTimeoutMS: 10_000 }).connect();
  });
  test.after.always(async () => {
    if (db !== undefined)
      await client
        ?.db(db)
        .dropDatabase()
        .catch(() => {});
    await client?.close();
    await mongo?.stop();
  });
  const started = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error("useMongo: used before its before hook ran");
    return v;
  };
  return {
    get uri() {
      return started(mongo).uri;
    },
    get client() {
      return started(client);
    },
  };
}
