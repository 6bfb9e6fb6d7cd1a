// `tokenvend check-config`: loads and validates the configuration exactly as `serve` would
// (the file, the environment overrides, secret files, the encryption keys), prints what it
// resolved to with every secret left out, and a digest of that, so two replicas' configurations
// can be compared. A bad value exits 2 with the option named.

import { createHash } from "node:crypto";
import type { Config } from "../config.ts";
import { loadKeyring } from "../store/open-store.ts";
import { KEY_HOWTO, SealingError } from "../store/sealing.ts";
import { type Command, configOption, EXIT_OK, jsonOption } from "./command.ts";
import { commandEnv, loadCommandConfig, storeLabel } from "./configured.ts";
import { printResult } from "./output.ts";

/** The configuration as it can be shown: Maps as objects, secrets replaced by whether they are set. */
export function describeConfig(config: Config, keyIds: readonly string[]): Record<string, unknown> {
  const { store, encryptionKeys, encryptionKeyFiles, bootstrap, ...rest } = config;
  return withoutSecrets({
    ...rest,
    store: storeLabel(config),
    encryptionKeyIds: keyIds,
    bootstrap: {
      sessions: bootstrap.filter((b) => b.key.kind === "session").length,
      grants: bootstrap.filter((b) => b.key.kind === "grant").length,
    },
  }) as Record<string, unknown>;
}

// Any field so named holds a secret (client secrets, private keys, webhook secrets, the audit
// HMAC key, API key hashes): whatever the config gains later is covered by its name, not by a
// list kept here. And anything that is not plain data (a Buffer, a KeyObject) is never shown.
const secretName = /secret|private|password|passphrase|hmac|sha256|credential|token$/i;

/** `value` with every secret replaced by whether it is set ("set", "none", "2 set"). */
function withoutSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutSecrets);
  if (value instanceof Map) return withoutSecrets(Object.fromEntries(value));
  if (typeof value !== "object" || value === null) return value;
  if (Object.getPrototypeOf(value) !== Object.prototype) return "set";
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [
      k,
      !secretName.test(k)
        ? withoutSecrets(v)
        : v === undefined
          ? "none"
          : Array.isArray(v)
            ? `${v.length} set`
            : "set",
    ]),
  );
}

export const checkConfig: Command = {
  name: "check-config",
  summary: "validate the configuration and print what it resolves to",
  usage: "[--config FILE] [--json]",
  description: `
Reads the configuration as \`tokenvend serve\` does: TOKENVEND_CONFIG (or --config), then the
TOKENVEND_* and MONGODB_URI environment, secret files and the encryption keys. Prints the resolved
settings (durations in ms, secrets only as "set") and a SHA-256 digest of them. Exits 2 naming the
option when anything is invalid.`,
  options: { config: configOption, json: jsonOption },
  async run(values, io) {
    const config = loadCommandConfig(values, io);
    const keyring =
      config.store.kind === "memory" && config.encryptionKeys === undefined
        ? undefined
        : await loadKeyring({
            keyText: config.encryptionKeys,
            keyFiles: config.encryptionKeyFiles,
          });
    if (config.store.kind !== "memory" && keyring === undefined) {
      throw new SealingError(
        "INVALID_KEY",
        `the ${config.store.kind} store needs an encryption key: set TOKENVEND_ENCRYPTION_KEYS or TOKENVEND_ENCRYPTION_KEY_FILES; ${KEY_HOWTO}`,
      );
    }
    const resolved = describeConfig(config, keyring?.ids ?? []);
    const digest = `sha256:${createHash("sha256").update(JSON.stringify(resolved)).digest("hex")}`;
    const source = commandEnv(values, io).TOKENVEND_CONFIG || "(no file: defaults and environment)";
    printResult(
      io,
      values.json === true,
      { ok: true, source, digest, config: resolved },
      values.json === true ? undefined : `configuration OK: ${source}`,
    );
    return EXIT_OK;
  },
};
