// The port for the short-lived state of the flows tokenvend runs: pending authorizations (the
// PKCE verifier and nonce of a state), pending device authorizations, one-use markers, and the
// small leases and watermarks of background work. Shared by every replica when the store is.
//
// Correctness rests on the same two primitives as the token store (DESIGN.md, "Storage and
// concurrency", rule 4): `create` succeeds for exactly one writer of an id, and `remove` is true
// for exactly one caller. `replace` only changes what a record says (a device authorization's
// outcome), never who wins. Records carry an expiry; `sweep` deletes expired ones, and `get`
// returns them still, so callers can say a state expired rather than that it is unknown. Adapters seal `secrets` at rest,
// with the record id bound as associated data.

import type { StoreCallOptions } from "./token-store.ts";

export type FlowFieldValue = string | number | boolean | readonly string[];

export interface FlowRecord {
  /** Unique; the core namespaces it by kind (see authorization-flow.ts, device-flow.ts). */
  readonly id: string;
  /** Wall-clock ms after which the record means nothing and may be swept. */
  readonly expiresAt: number;
  /** Not secret: kind, session id, provider, redirect URI, scopes, status. */
  readonly fields: Readonly<Record<string, FlowFieldValue>>;
  /** Sealed at rest: PKCE verifiers, nonces, device codes. */
  readonly secrets: Readonly<Record<string, string>>;
}

export interface FlowStateStore {
  /** Which adapter, for logs. */
  readonly kind: string;
  /** Creates the record; false (and nothing written) when its id exists. */
  create(record: FlowRecord, opts?: StoreCallOptions): Promise<boolean>;
  get(id: string, opts?: StoreCallOptions): Promise<FlowRecord | undefined>;
  /** Overwrites an existing record; false when there is none. */
  replace(record: FlowRecord, opts?: StoreCallOptions): Promise<boolean>;
  /** Deletes the record; true only for the one caller that deleted it. */
  remove(id: string, opts?: StoreCallOptions): Promise<boolean>;
  /** Deletes records that expired before `now`; returns how many. */
  sweep(now: number, opts?: StoreCallOptions): Promise<number>;
  close(): Promise<void>;
}

/** A string field of a record, or "" when absent or not a string. */
export function fieldText(r: FlowRecord, name: string): string {
  const v = r.fields[name];
  return typeof v === "string" ? v : "";
}

/** A number field of a record, or undefined. */
export function fieldNumber(r: FlowRecord, name: string): number | undefined {
  const v = r.fields[name];
  return typeof v === "number" ? v : undefined;
}

/** A string-list field of a record, or []. */
export function fieldList(r: FlowRecord, name: string): string[] {
  const v = r.fields[name];
  return Array.isArray(v) ? [...v] : [];
}
