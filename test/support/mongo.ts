// The MongoDB the tests run against: a real MongoDB when MONGODB_URI is set (stop() leaves it
// alone), otherwise a fresh FerretDB on its PostgreSQL backend (a private PostgreSQL in a temp
// data dir, scripts/ferretdb.ts) started for the caller and removed again by stop().

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
