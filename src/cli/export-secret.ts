// The secret an export is sealed with, from flags or the environment: an export key
// (--key-file, TOKENVEND_EXPORT_KEY=id:base64) or a passphrase (--passphrase-file,
// TOKENVEND_EXPORT_PASSPHRASE). Never a flag's value itself: a command line is visible to every
// user of the machine (ps), a file or the environment is not.

import { readFileSync } from "node:fs";
import type { ExportSecret } from "../ops/export-key.ts";
import { type Io, type OptionSpec, optional, UsageError, type Values } from "./command.ts";

export const secretOptions: Record<string, OptionSpec> = {
  "key-file": {
    type: "string",
    value: "FILE",
    help: "the export key: a file named after the key id holding its base64 (tokenvend keygen --raw)",
  },
  "passphrase-file": {
    type: "string",
    value: "FILE",
    help: "a passphrase (the file's first line), stretched with scrypt",
  },
};

export const secretHelp = `
The file is sealed (AES-256-GCM) under an export key or a passphrase, never written in clear: give
exactly one of --key-file FILE, TOKENVEND_EXPORT_KEY=ID:BASE64, --passphrase-file FILE or
TOKENVEND_EXPORT_PASSPHRASE (at least 12 characters).`;

export function exportSecret(values: Values, io: Io): ExportSecret {
  const keyFile = optional(values, "key-file");
  const passFile = optional(values, "passphrase-file");
  const keyEnv = io.env.TOKENVEND_EXPORT_KEY || undefined;
  const passEnv = io.env.TOKENVEND_EXPORT_PASSPHRASE || undefined;
  const given = [
    keyFile && "--key-file",
    passFile && "--passphrase-file",
    keyEnv && "TOKENVEND_EXPORT_KEY",
    passEnv && "TOKENVEND_EXPORT_PASSPHRASE",
  ].filter(Boolean);
  if (given.length !== 1) {
    throw new UsageError(
      given.length === 0
        ? "an export is sealed: give --key-file, --passphrase-file, TOKENVEND_EXPORT_KEY or TOKENVEND_EXPORT_PASSPHRASE"
        : `give one export secret, not ${given.join(" and ")}`,
    );
  }
  if (keyFile !== undefined) return { kind: "keyFile", path: keyFile };
  if (keyEnv !== undefined) return { kind: "key", keyText: keyEnv, source: "TOKENVEND_EXPORT_KEY" };
  if (passEnv !== undefined) {
    return { kind: "passphrase", passphrase: passEnv, source: "TOKENVEND_EXPORT_PASSPHRASE" };
  }
  let text: string;
  try {
    text = readFileSync(passFile as string, "utf8");
  } catch (err) {
    throw new UsageError(
      `--passphrase-file ${passFile}: cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  return {
    kind: "passphrase",
    passphrase: text.split(/\r?\n/)[0] ?? "",
    source: `--passphrase-file ${passFile}`,
  };
}
