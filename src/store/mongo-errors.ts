// What a MongoDB driver failure means for the store: a lost insert race (duplicate key), a
// backend that is not answering now (UNAVAILABLE, transient), or a refusal (FAILED). Classified
// by error class name, error label, server code and socket error code, never by message text:
// messages change between driver and server versions, codes and labels do not.

import { SealingError } from "./sealing.ts";
import { StoreError } from "./store-error.ts";

/** A unique-index violation: another writer created this (key, generation) first. */
export function isDuplicateKey(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === 11000;
}

const UNAVAILABLE_NAMES = new Set([
  "MongoNetworkError",
  "MongoNetworkTimeoutError",
  "MongoServerSelectionError",
  "MongoPoolClearedError",
  "MongoTopologyClosedError",
  "MongoNotConnectedError",
  "MongoServerClosedError",
  "MongoOperationTimeoutError",
  "MongoWaitQueueTimeoutError",
  "TimeoutError",
  "AbortError",
]);
const UNAVAILABLE_LABELS = [
  "ResetPool",
  "RetryableWriteError",
  "TransientTransactionError",
  "SystemOverloadedError",
];
/** Server codes that mean "not now" rather than "no": shutdown, failover, network, time limits. */
const UNAVAILABLE_SERVER_CODES = new Set([
  6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
]);
/** Node socket errors; a dropped connection may surface as a plain Error with one of these. */
const UNAVAILABLE_SYSTEM_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ERR_SOCKET_CLOSED",
  "ERR_STREAM_DESTROYED",
  "ERR_STREAM_WRITE_AFTER_END",
]);

export function isMongoUnavailable(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const e = err as {
    name?: unknown;
    code?: unknown;
    hasErrorLabel?: (label: string) => boolean;
  };
  if (typeof e.name === "string" && UNAVAILABLE_NAMES.has(e.name)) return true;
  if (typeof e.hasErrorLabel === "function" && UNAVAILABLE_LABELS.some((l) => e.hasErrorLabel?.(l)))
    return true;
  if (typeof e.code === "number" && UNAVAILABLE_SERVER_CODES.has(e.code)) return true;
  if (typeof e.code === "string" && UNAVAILABLE_SYSTEM_CODES.has(e.code)) return true;
  return false;
}

/** The StoreError a failed command `what` surfaces as; store and sealing errors pass as they are. */
export function classifyMongoError(what: string, err: unknown): unknown {
  if (err instanceof StoreError || err instanceof SealingError) return err;
  if (isMongoUnavailable(err)) {
    return new StoreError("UNAVAILABLE", `mongo ${what}: the database is unreachable`, {
      cause: err,
    });
  }
  const code = (err as { code?: unknown } | null)?.code;
  return new StoreError(
    "FAILED",
    `mongo ${what} failed${typeof code === "number" || typeof code === "string" ? ` (code ${code})` : ""}`,
    { cause: err },
  );
}
