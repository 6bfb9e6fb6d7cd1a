// The memory adapter of the FlowStateStore port: one process, nothing kept across restarts
// (the embedded default, beside the memory token store). At most maxRecords records: beyond,
// a new one is refused (StoreFullError) until the sweep removes expired ones.

import type { FlowRecord, FlowStateStore } from "../core/flow-state-store.ts";
import { flowStatesFull } from "./capacity.ts";

export function createMemoryFlowStates(maxRecords = Number.POSITIVE_INFINITY): FlowStateStore {
  const records = new Map<string, FlowRecord>();
  return {
    kind: "memory",
    async create(r) {
      if (records.has(r.id)) return false;
      if (records.size >= maxRecords) throw flowStatesFull("memory", records.size);
      records.set(r.id, structuredClone(r));
      return true;
    },
    async get(id) {
      const r = records.get(id);
      return r === undefined ? undefined : structuredClone(r);
    },
    async replace(r) {
      if (!records.has(r.id)) return false;
      records.set(r.id, structuredClone(r));
      return true;
    },
    async remove(id) {
      return records.delete(id);
    },
    async sweep(now) {
      let n = 0;
      for (const [id, r] of records) if (r.expiresAt < now && records.delete(id)) n++;
      return n;
    },
    async close() {
      records.clear();
    },
  };
}
