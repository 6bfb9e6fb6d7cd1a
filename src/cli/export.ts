// `tokenvend export`: every key's active generation in the configured store, with its
// generation, binding and every other field of the record, to one sealed file (ops/export-file.ts).
// The file is written beside its final name (mode 0600) and renamed once complete, so a failed
// export leaves no partial file behind.

import { createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { finished } from "node:stream/promises";
import { configDefaults } from "../config.ts";
import { createExportWriter, exportHeader } from "../ops/export-file.ts";
import { sealingForExport } from "../ops/export-key.ts";
import { exportStore } from "../ops/export-store.ts";
import {
  type Command,
  configOption,
  EXIT_OK,
  jsonOption,
  positive,
  required,
  UsageError,
} from "./command.ts";
import { loadCommandConfig, openCommandStore, storeLabel } from "./configured.ts";
import { exportSecret, secretHelp, secretOptions } from "./export-secret.ts";
import { createProgress, printResult } from "./output.ts";

export const exportCommand: Command = {
  name: "export",
  summary: "write every live session and grant token to a sealed backup file",
  usage: "--out FILE (--key-file FILE | --passphrase-file FILE) [options]",
  description: `
Writes every key of the configured store (MongoDB or the file store: the same config as serve)
to FILE: each session's and grant's current generation with its tokens, scopes, expiry, binding
(subject, client id) and any other field the record holds, and revocations, so an import cannot
bring a revoked session back. Renewals made while it runs may or may not be in the file.
${secretHelp}

A file store is locked by the replica using it: stop that replica first. \`tokenvend import\`
loads the file into any store, under any encryption keys.`,
  options: {
    out: { type: "string", value: "FILE", help: "where to write (- for stdout)" },
    ...secretOptions,
    "page-size": {
      type: "string",
      value: "N",
      help: `keys per store read and per sealed chunk (default ${configDefaults.exportPageSize})`,
    },
    config: configOption,
    json: jsonOption,
  },
  async run(values, io) {
    const out = required(values, "out");
    const json = values.json === true;
    if (out === "-" && json) throw new UsageError("--json prints to stdout: give --out a file");
    const pageSize = positive(values, "page-size", configDefaults.exportPageSize);
    const secret = exportSecret(values, io);
    const config = loadCommandConfig(values, io);
    const { keyring, sealing } = await sealingForExport(secret);
    const store = await openCommandStore(config, io, "export");
    const path = out === "-" ? undefined : resolve(io.cwd, out);
    const temp = path && join(dirname(path), `.${basename(path)}.${process.pid}.partial`);
    const file =
      temp !== undefined ? createWriteStream(temp, { mode: 0o600, flags: "wx" }) : undefined;
    const progress = createProgress(io, "exported");
    try {
      const writer = createExportWriter(file ?? io.stdout, {
        keyring,
        header: exportHeader(sealing, store.kind, new Date()),
      });
      const counts = await exportStore({
        store,
        writer,
        pageSize,
        onProgress: (n) => progress.update(`${n} keys`),
      });
      progress.done();
      if (file !== undefined && temp !== undefined && path !== undefined) {
        file.end();
        await finished(file);
        await rename(temp, path);
      }
      const result = {
        file: path ?? "-",
        store: storeLabel(config),
        sealing: sealing.kind === "key" ? { key: sealing.keyId } : { passphrase: "scrypt" },
        ...counts,
      };
      const headline = `exported ${counts.records} keys (${counts.sessions} sessions, ${counts.grants} grants, ${counts.revoked} revoked)`;
      printResult(path === undefined ? { ...io, stdout: io.stderr } : io, json, result, headline);
      return EXIT_OK;
    } catch (err) {
      progress.done();
      if (file !== undefined && temp !== undefined) {
        file.destroy();
        await rm(temp, { force: true });
      }
      throw err;
    } finally {
      await store.close();
    }
  },
};
