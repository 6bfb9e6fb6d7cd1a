// Opens the FlowStateStore beside a replica's token store, from the same settings: memory with
// memory, `<dir>/flows.json` with the file store (open it after the token store: its directory
// lock is what keeps a second process out), the `flows` collection of the same database with
// MongoDB (its own client, from the same connection string). Sealed with the same keys.

import type { FlowStateStore } from "../core/flow-state-store.ts";
import { createMemoryFlowStates } from "./flow-state-memory.ts";
import { type KeySources, loadKeyring, type StoreSettings } from "./open-store.ts";
import { KEY_HOWTO, SealingError } from "./sealing.ts";

export async function openFlowStates(
  store: StoreSettings,
  keys: KeySources,
  /** The memory and file adapters' bound (limits.flowStates.maxRecords). */
  maxRecords?: number,
): Promise<FlowStateStore> {
  if (store.kind === "memory") return createMemoryFlowStates(maxRecords);
  const keyring = await loadKeyring(keys);
  if (keyring === undefined) {
    throw new SealingError("INVALID_KEY", `the flow state store needs a key; ${KEY_HOWTO}`);
  }
  if (store.kind === "file") {
    const { createFileFlowStates } = await import("./flow-state-file.ts");
    return createFileFlowStates({
      dir: store.dir,
      keyring,
      ...(maxRecords !== undefined ? { maxRecords } : {}),
    });
  }
  const { createMongoFlowStates } = await import("./flow-state-mongo.ts");
  return createMongoFlowStates({ client: store.uri, dbName: store.dbName, keyring });
}
