// `npm run reencrypt`: re-seals every stored token under the keyring's first
// (primary) key, while replicas keep serving. Run it only after every replica
// runs with the new key first in TOKENVEND_ENCRYPTION_KEYS (docs/STORAGE.md).

import { readFileSync } from "node:fs";
import { ConfigError, loadConfig } from "./config.ts";
import { createLogger } from "./log.ts";
import { auditSinkOf, keyIdsOf } from "./security.ts";
import { openStore } from "./store/open-store.ts";

const config = loadConfig({ env: process.env, readFile: (p) => readFileSync(p, "utf8") });
const log = createLogger(config.logLevel);
// A key rotation is an audited operation: which primary key, how many documents, whether it finished.
const audit = auditSinkOf(config, log, Date.now);
const record = (outcome: string, documents?: number) => {
  try {
    audit?.write({
      event: "keyring",
      outcome,
      details: {
        action: "reencrypt",
        primary: keyIdsOf(config)[0] ?? "",
        ...(documents !== undefined ? { documents } : {}),
      },
    });
  } catch {
    // Reported by the sink's onError.
  }
};
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
  record("OK", n);
} catch (err) {
  record("FAILED");
  process.stderr.write(
    `tokenvend reencrypt: ${err instanceof Error ? err.message : String(err)}\n`,
  );
  process.exitCode = 1;
}
await audit?.close();
