// `npm run reencrypt`: re-seals every stored token under the keyring's first
// (primary) key, while replicas keep serving. Run it only after every replica
// runs with the new key first in TOKENVEND_ENCRYPTION_KEYS (docs/STORAGE.md).

import { readFileSync } from "node:fs";
import { ConfigError, loadConfig } from "./config.ts";
import { createLogger } from "./log.ts";
import { openStore } from "./store/open-store.ts";

const config = loadConfig({ env: process.env, readFile: (p) => readFileSync(p, "utf8") });
const log = createLogger(config.logLevel);
try {
  if (config.store.kind === "memory") {
    throw new ConfigError("nothing to re-encrypt: set MONGODB_URI or TOKENVEND_DATA_DIR");
  }
  const store = await openStore({
    store: config.store,
    keys: { keyText: config.encryptionKeys, keyFiles: config.encryptionKeyFiles },
    logger: log,
  });
  const reencrypt = (store as { reencrypt?: () => Promise<number> }).reencrypt;
  const n = reencrypt ? await reencrypt.call(store) : 0;
  await store.close();
  log.info({ store: store.kind, documents: n }, "re-encrypted under the primary key");
} catch (err) {
  process.stderr.write(
    `tokenvend reencrypt: ${err instanceof Error ? err.message : String(err)}\n`,
  );
  process.exitCode = 1;
}
