// The service's configuration and store as the operator commands open them: the same config
// (TOKENVEND_CONFIG or --config, the same environment overrides) and the same store and keys a
// replica would use, with warnings and errors on stderr and nothing on stdout.

import { readFileSync } from "node:fs";
import { type Config, ConfigError, loadConfig } from "../config.ts";
import type { Logger } from "../core/logger.ts";
import type { TokenStore } from "../core/token-store.ts";
import { openStore } from "../store/open-store.ts";
import { type Io, optional, type Values } from "./command.ts";

/** The environment a command sees: the process's, with --config as TOKENVEND_CONFIG. */
export function commandEnv(values: Values, io: Io): Record<string, string | undefined> {
  const config = optional(values, "config");
  return config === undefined ? { ...io.env } : { ...io.env, TOKENVEND_CONFIG: config };
}

export function loadCommandConfig(values: Values, io: Io): Config {
  return loadConfig({ env: commandEnv(values, io), readFile: (p) => readFileSync(p, "utf8") });
}

/** Warnings and errors as text lines on stderr (stdout is the command's answer). */
export function stderrLogger(io: Io, command: string): Logger {
  const line = (level: string) => (obj: object, msg?: string) =>
    io.stderr.write(`tokenvend ${command}: ${level}: ${msg ?? ""} ${JSON.stringify(obj)}\n`);
  const quiet = () => {};
  return { debug: quiet, info: quiet, warn: line("warning"), error: line("error") };
}

/** The store a replica with this config would use; the memory store holds nothing to work on. */
export async function openCommandStore(
  config: Config,
  io: Io,
  command: string,
): Promise<TokenStore> {
  if (config.store.kind === "memory") {
    throw new ConfigError(
      "no store is configured (the memory store of a new process is empty): set MONGODB_URI or TOKENVEND_DATA_DIR",
    );
  }
  return openStore({
    store: config.store,
    keys: { keyText: config.encryptionKeys, keyFiles: config.encryptionKeyFiles },
    logger: stderrLogger(io, command),
  });
}

/** Where a command's store is, for its answer (never the MongoDB URI: it may hold a password). */
export function storeLabel(config: Config): Record<string, string> {
  const s = config.store;
  return s.kind === "mongo"
    ? { kind: "mongo", database: s.dbName }
    : s.kind === "file"
      ? { kind: "file", dir: s.dir }
      : { kind: "memory" };
}
