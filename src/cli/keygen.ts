// `tokenvend keygen`: a new 32-byte key in the form TOKENVEND_ENCRYPTION_KEYS and
// TOKENVEND_EXPORT_KEY accept (`id:base64`), or only the base64 for a key file.

import { generateKey } from "../store/sealing.ts";
import { type Command, EXIT_OK, jsonOption, optional, UsageError } from "./command.ts";
import { printResult } from "./output.ts";

const KID = /^[A-Za-z0-9._-]{1,64}$/;

export const keygen: Command = {
  name: "keygen",
  summary: "print a new encryption or export key",
  usage: "[--id ID] [--raw | --json]",
  description: `
Prints a new random 256-bit key as ID:BASE64, the form TOKENVEND_ENCRYPTION_KEYS (comma-separated,
the first one seals) and TOKENVEND_EXPORT_KEY take. With --raw, only the base64, for a key file
named after its id (TOKENVEND_ENCRYPTION_KEY_FILES, --key-file):

  tokenvend keygen --id k2026 --raw > /run/secrets/k2026`,
  options: {
    id: {
      type: "string",
      value: "ID",
      help: "the key id: 1-64 of A-Z a-z 0-9 . _ - (default: k + today's date, UTC)",
    },
    raw: { type: "boolean", help: "print only the base64 key" },
    json: jsonOption,
  },
  async run(values, io) {
    const id =
      optional(values, "id") ?? `k${new Date().toISOString().slice(0, 10).replaceAll("-", "")}`;
    if (!KID.test(id)) {
      throw new UsageError("--id must be 1-64 characters of A-Z a-z 0-9 . _ -");
    }
    const key = generateKey();
    if (values.raw === true) io.stdout.write(`${key}\n`);
    else if (values.json === true) printResult(io, true, { id, key, entry: `${id}:${key}` });
    else io.stdout.write(`${id}:${key}\n`);
    return EXIT_OK;
  },
};
