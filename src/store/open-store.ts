// Picks and opens the store the config names. MongoDB and file stores encrypt
// tokens at rest and refuse to start without a key.

import type { Config } from "../config.ts";
import { ConfigError } from "../config.ts";
import type { Logger } from "../core/logger.ts";
import type { TokenStore } from "../core/token-store.ts";
import { createMemoryStore } from "./memory-store.ts";
import { createKeyring, KEY_HOWTO, type Keyring, parseKeys, readKeyFiles } from "./sealing.ts";

export async function loadKeyring(config: Config): Promise<Keyring | undefined> {
  const keys = [
    ...(config.encryptionKeys !== undefined ? parseKeys(config.encryptionKeys) : []),
    ...(config.encryptionKeyFiles.length > 0 ? await readKeyFiles(config.encryptionKeyFiles) : []),
  ];
  return keys.length > 0 ? createKeyring(keys) : undefined;
}

export async function openStore(config: Config, logger: Logger): Promise<TokenStore> {
  const s = config.store;
  if (s.kind === "memory") return createMemoryStore();
  const keyring = await loadKeyring(config);
  if (keyring === undefined) {
    throw new ConfigError(
      `the ${s.kind === "mongo" ? "MongoDB" : "file"} store encrypts tokens at rest and needs a key: ` +
        `set TOKENVEND_ENCRYPTION_KEYS=primary:<key> (or TOKENVEND_ENCRYPTION_KEY_FILES); ${KEY_HOWTO}`,
    );
  }
  // Loaded only when chosen: the MongoDB driver alone is ~35 MB of a memory-store replica.
  if (s.kind === "file") {
    const { createFileStore } = await import("./file-store.ts");
    return createFileStore({ dir: s.dir, keyring, logger });
  }
  const { createMongoStore } = await import("./mongo-store.ts");
  const store = createMongoStore({ client: s.uri, dbName: s.dbName, keyring, logger });
  // Indexes are ensured in the background: an unreachable MongoDB at start is
  // retried by the driver, and cached tokens do not need it.
  store.ensureIndexes().catch((err: unknown) => {
    logger.warn(
      { err: err instanceof Error ? err.message : String(err) },
      "could not ensure MongoDB indexes yet",
    );
  });
  return store;
}
