// `tokenvend import`: an export file into the configured store, idempotently (a newer
// generation already there wins), with --dry-run, then the verification pass: every record
// written is read back and compared (ops/import-store.ts).

import { createReadStream } from "node:fs";
import { resolve } from "node:path";
import { configDefaults } from "../config.ts";
import type { TokenRecord } from "../core/token.ts";
import { type ExportCounts, readExport } from "../ops/export-file.ts";
import { keyringForImport } from "../ops/export-key.ts";
import { importRecords } from "../ops/import-store.ts";
import {
  type Command,
  configOption,
  EXIT_FAILED,
  EXIT_OK,
  jsonOption,
  positive,
  required,
} from "./command.ts";
import { loadCommandConfig, openCommandStore, storeLabel } from "./configured.ts";
import { exportSecret, secretHelp, secretOptions } from "./export-secret.ts";
import { createProgress, printError, printResult } from "./output.ts";

export const importCommand: Command = {
  name: "import",
  summary: "load a backup file into the configured store (idempotent, verified)",
  usage: "--in FILE (--key-file FILE | --passphrase-file FILE) [--dry-run] [options]",
  description: `
Loads a file written by \`tokenvend export\` into the configured store (any store, any encryption
keys: records are sealed again under this store's primary key). Per key: absent or older here,
the file's generation is written and becomes active; the same generation here, nothing is written
("present", or "conflicts" when it differs: the store's is kept); newer here, nothing is written
("newer"). Running it twice writes nothing the second time. Each written record is read back and
compared; any difference is listed and the exit code is 1.
${secretHelp}`,
  options: {
    in: { type: "string", value: "FILE", help: "the export file (- for stdin)" },
    ...secretOptions,
    "dry-run": { type: "boolean", help: "read the file and the store, count, write nothing" },
    concurrency: {
      type: "string",
      value: "N",
      help: `inserts in flight at once (default ${configDefaults.importConcurrency})`,
    },
    config: configOption,
    json: jsonOption,
  },
  async run(values, io) {
    const input = required(values, "in");
    const dryRun = values["dry-run"] === true;
    const concurrency = positive(values, "concurrency", configDefaults.importConcurrency);
    const secret = exportSecret(values, io);
    const config = loadCommandConfig(values, io);
    const stream = input === "-" ? io.stdin : createReadStream(resolve(io.cwd, input));
    const store = await openCommandStore(config, io, "import");
    const progress = createProgress(io, dryRun ? "checked" : "imported");
    let counts: ExportCounts | undefined;
    async function* chunks(): AsyncGenerator<TokenRecord[]> {
      for await (const item of readExport(stream, (h) => keyringForImport(h.sealing, secret))) {
        if (item.kind === "end") counts = item.counts;
        else yield item.records;
      }
    }
    try {
      const report = await importRecords(chunks(), {
        store,
        dryRun,
        concurrency,
        onProgress: (r) =>
          progress.update(`${r.read} read, ${r.imported} ${dryRun ? "to write" : "written"}`),
      });
      progress.done();
      const result = { file: input, store: storeLabel(config), dryRun, inFile: counts, ...report };
      const verb = dryRun ? "would import" : "imported";
      printResult(
        io,
        values.json === true,
        result,
        `${verb} ${report.imported} of ${report.read} keys (${report.present} present, ${report.newer} newer here, ${report.conflicts} conflicts)`,
      );
      if (report.mismatched.length > 0) {
        printError(io, "import", `${report.mismatched.length} records read back different`);
        return EXIT_FAILED;
      }
      return EXIT_OK;
    } finally {
      progress.done();
      await store.close();
    }
  },
};
