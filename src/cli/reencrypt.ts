// `tokenvend reencrypt` (was `npm run reencrypt`): re-seals every stored token under the first
// (primary) key of the keyring, while replicas keep serving. On MongoDB it first checks the live
// replicas (store/mongo-replicas.ts) and refuses when one of them does not seal under the same
// primary key: that replica would keep writing under the old key, or could not read the new one.
// A file store is locked by its replica, so it cannot run beside one at all.

import type { TokenStore } from "../core/token-store.ts";
import { createLogger } from "../log.ts";
import { LIVE_BEATS } from "../ops/replica-heartbeat.ts";
import { auditSinkOf, keyIdsOf } from "../security.ts";
import { replicaRegistryOf } from "../store/mongo-replicas.ts";
import type { ReencryptOptions, ReencryptReport } from "../store/reseal.ts";
import { type Command, configOption, EXIT_FAILED, EXIT_OK, jsonOption } from "./command.ts";
import { loadCommandConfig, openCommandStore, storeLabel } from "./configured.ts";
import { createProgress, printError, printResult } from "./output.ts";

type Reencrypting = TokenStore & { reencrypt(opts?: ReencryptOptions): Promise<ReencryptReport> };

const why = {
  "other-primary": "seals under another primary key",
  "other-material": "has a primary key with this id but other key material",
  unreadable: "sealed its probe under a key this keyring does not have",
} as const;

export const reencrypt: Command = {
  name: "reencrypt",
  summary: "re-seal every stored token under the primary encryption key",
  usage: "[--dry-run] [--config FILE] [--json]",
  description: `
Re-seals every stored token sealed under any key but the first of TOKENVEND_ENCRYPTION_KEYS (or
TOKENVEND_ENCRYPTION_KEY_FILES), reading which key sealed each value from the value itself. Run it
after every replica runs with the new key first (docs/STORAGE.md, "Rotating a key"): on MongoDB it
checks the replicas that recorded themselves in the last ${LIVE_BEATS} heartbeats and refuses (exit 1),
naming them, when one seals under another key. Values it cannot open are left alone and counted
(exit 1). --dry-run counts what would be re-sealed and writes nothing.`,
  options: {
    "dry-run": { type: "boolean", help: "count what would be re-sealed; write nothing" },
    config: configOption,
    json: jsonOption,
  },
  async run(values, io) {
    const json = values.json === true;
    const dryRun = values["dry-run"] === true;
    const config = loadCommandConfig(values, io);
    const store = (await openCommandStore(config, io, "reencrypt")) as Reencrypting;
    // A key rotation is an audited operation: which primary key, how many documents, the outcome.
    const audit = dryRun ? undefined : auditSinkOf(config, createLogger(config.logLevel), Date.now);
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
    let outcome = "FAILED";
    let documents: number | undefined;
    try {
      const registry = replicaRegistryOf(store);
      const replicas = registry ? await registry.live(LIVE_BEATS * config.replicaHeartbeatMs) : [];
      const refused = replicas
        .map((r) => ({ replica: r, check: registry!.checkPrimary(r) }))
        .filter(({ check }) => !check.ok)
        .map(({ replica, check }) => ({
          id: replica.id,
          host: replica.host,
          primaryKeyId: replica.primaryKeyId,
          problem: check.ok ? "" : why[check.why],
        }));
      if (refused.length > 0) {
        printResult(
          io,
          json,
          { refused, liveReplicas: replicas.length },
          "refused: not every live replica seals under this primary key",
        );
        printError(
          io,
          "reencrypt",
          `${refused.length} live replica(s) do not seal under this keyring's primary key: restart them with the new key first in TOKENVEND_ENCRYPTION_KEYS, then run this again`,
        );
        outcome = "REFUSED";
        return EXIT_FAILED;
      }
      const progress = createProgress(io, dryRun ? "checked" : "re-sealed");
      const report = await store.reencrypt({
        dryRun,
        onProgress: (r) => progress.update(`${r.scanned} scanned, ${r.resealed} to the primary`),
      });
      progress.done();
      const result = {
        store: storeLabel(config),
        dryRun,
        liveReplicas: replicas.length,
        ...report,
      };
      printResult(
        io,
        json,
        result,
        `${dryRun ? "would re-seal" : "re-sealed"} ${report.resealed} of ${report.scanned} documents`,
      );
      documents = report.resealed;
      const unreadable = Object.values(report.unreadable).reduce((a, b) => a + b, 0);
      if (unreadable > 0) {
        printError(
          io,
          "reencrypt",
          `${unreadable} documents are sealed under keys this keyring cannot open (${Object.keys(report.unreadable).join(", ")}): add those keys after the primary and run again`,
        );
        return EXIT_FAILED;
      }
      outcome = "OK";
      return EXIT_OK;
    } finally {
      await store.close();
      record(outcome, documents);
      await audit?.close();
    }
  },
};
