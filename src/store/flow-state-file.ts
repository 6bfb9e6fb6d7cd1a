// The file adapter of the FlowStateStore port, beside the file token store: `<dir>/flows.json`
// (mode 0600), secrets sealed as in the token state file, every change written atomically
// (./state-file.ts writeAtomically) one at a time. One process per directory: the file token
// store's lock, taken before this opens, guarantees it. Expired records are dropped at open.
// At most maxRecords records: beyond, a new one is refused (StoreFullError).

import * as fs from "node:fs/promises";
import * as path from "node:path";
import type { FlowStateStore } from "../core/flow-state-store.ts";
import { flowStatesFull } from "./capacity.ts";
import { io } from "./file-io.ts";
import { type FlowDocument, fromFlowDocument, toFlowDocument } from "./flow-state-document.ts";
import type { Keyring } from "./sealing.ts";
import { writeAtomically } from "./state-file.ts";
import { StoreError } from "./store-error.ts";

export const FLOWS_FILE = "flows.json";
const FORMAT = "tokenvend-flow-state";

export async function createFileFlowStates(opts: {
  readonly dir: string;
  readonly keyring: Keyring;
  readonly now?: () => number;
  /** Beyond it a new record is refused (StoreFullError); unbounded when absent. */
  readonly maxRecords?: number;
}): Promise<FlowStateStore> {
  const maxRecords = opts.maxRecords ?? Number.POSITIVE_INFINITY;
  const dir = path.resolve(opts.dir);
  const file = path.join(dir, FLOWS_FILE);
  const now = opts.now ?? Date.now;
  const docs = new Map<string, FlowDocument>();
  for (const name of await io(`list ${dir}`, () => fs.readdir(dir))) {
    if (name.startsWith(`${FLOWS_FILE}.`) && name.endsWith(".tmp")) {
      await fs.rm(path.join(dir, name), { force: true });
    }
  }
  const text = await io(`read ${FLOWS_FILE}`, () =>
    fs.readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw err;
    }),
  );
  if (text !== undefined) {
    let parsed: { format?: unknown; records?: unknown };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      throw new StoreError("CORRUPT", `${FLOWS_FILE} is not JSON`);
    }
    if (parsed.format !== FORMAT || !Array.isArray(parsed.records)) {
      throw new StoreError("CORRUPT", `${FLOWS_FILE} is not a tokenvend flow state file`);
    }
    const t = now();
    for (const d of parsed.records as Record<string, unknown>[]) {
      fromFlowDocument(d, opts.keyring); // opens every secret: a wrong key fails at start
      if ((d.expiresAt as number) >= t) docs.set(d.id as string, d as unknown as FlowDocument);
    }
  }

  // Changes run one at a time; each is on disk before it resolves.
  let queue: Promise<unknown> = Promise.resolve();
  const change = <T>(fn: () => { result: T; dirty: boolean }): Promise<T> => {
    const next = queue.then(async () => {
      const { result, dirty } = fn();
      if (dirty) {
        const records = [...docs.values()];
        await writeAtomically(dir, file, `${JSON.stringify({ format: FORMAT, records })}\n`);
      }
      return result;
    });
    queue = next.catch(() => {});
    return next;
  };

  return {
    kind: "file",
    create: (r) =>
      change(() => {
        if (docs.has(r.id)) return { result: false, dirty: false };
        if (docs.size >= maxRecords) throw flowStatesFull("file", docs.size);
        docs.set(r.id, toFlowDocument(r, opts.keyring));
        return { result: true, dirty: true };
      }),
    async get(id) {
      const d = docs.get(id);
      return d === undefined ? undefined : fromFlowDocument({ ...d }, opts.keyring);
    },
    replace: (r) =>
      change(() => {
        if (!docs.has(r.id)) return { result: false, dirty: false };
        docs.set(r.id, toFlowDocument(r, opts.keyring));
        return { result: true, dirty: true };
      }),
    remove: (id) =>
      change(() => {
        const removed = docs.delete(id);
        return { result: removed, dirty: removed };
      }),
    sweep: (t) =>
      change(() => {
        let n = 0;
        for (const [id, d] of docs) if (d.expiresAt < t && docs.delete(id)) n++;
        return { result: n, dirty: n > 0 };
      }),
    async close() {
      await queue;
      docs.clear();
    },
  };
}
