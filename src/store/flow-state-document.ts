// The stored form of a flow record, shared by the file and MongoDB adapters: the fields as
// they are, each secret sealed on its own with `flow#${id}#${name}` as associated data, so a
// sealed value moved to another record or field does not open.

import type { FlowFieldValue, FlowRecord } from "../core/flow-state-store.ts";
import type { Keyring } from "./sealing.ts";
import { StoreError } from "./store-error.ts";

export interface FlowDocument {
  id: string;
  /** Epoch ms (a BSON date in MongoDB). */
  expiresAt: number;
  fields: Record<string, FlowFieldValue>;
  secrets: Record<string, string>;
}

const aad = (id: string, name: string) => `flow#${id}#${name}`;

export function toFlowDocument(r: FlowRecord, keyring: Keyring): FlowDocument {
  const secrets: Record<string, string> = {};
  for (const [name, value] of Object.entries(r.secrets)) {
    secrets[name] = keyring.seal(value, aad(r.id, name));
  }
  return { id: r.id, expiresAt: r.expiresAt, fields: { ...r.fields }, secrets };
}

export function fromFlowDocument(d: Record<string, unknown>, keyring: Keyring): FlowRecord {
  const { id, expiresAt, fields, secrets } = d;
  if (
    typeof id !== "string" ||
    typeof expiresAt !== "number" ||
    typeof fields !== "object" ||
    fields === null ||
    typeof secrets !== "object" ||
    secrets === null
  ) {
    throw new StoreError("CORRUPT", "a flow state record does not have the expected shape");
  }
  const open: Record<string, string> = {};
  for (const [name, sealed] of Object.entries(secrets as Record<string, unknown>)) {
    if (typeof sealed !== "string") {
      throw new StoreError("CORRUPT", `flow state record: secret "${name}" is not a string`);
    }
    open[name] = keyring.open(sealed, aad(id, name));
  }
  return { id, expiresAt, fields: fields as Record<string, FlowFieldValue>, secrets: open };
}
