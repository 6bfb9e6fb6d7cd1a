// Classification of driver failures, without a server: by class name, label and code, never by
// message text. The errors are plain ones shaped like the driver's (its constructors are
// internal): a name, a code, hasErrorLabel(); test/mongo-store.test.ts sees real ones.

import test from "ava";
import { classifyMongoError, isDuplicateKey, isMongoUnavailable } from "./mongo-errors.ts";
import { SealingError } from "./sealing.ts";
import { StoreError } from "./store-error.ts";

function driverError(
  name: string,
  message: string,
  fields: { code?: number | string; labels?: string[] } = {},
): Error {
  const labels = new Set(fields.labels);
  return Object.assign(new Error(message), {
    name,
    ...(fields.code !== undefined ? { code: fields.code } : {}),
    hasErrorLabel: (label: string) => labels.has(label),
  });
}
const serverError = (code: number, message = "refused", labels: string[] = []) =>
  driverError("MongoServerError", message, { code, labels });

test("duplicate key is code 11000 and nothing else", (t) => {
  t.true(isDuplicateKey(serverError(11000)));
  t.true(isDuplicateKey({ code: 11000 }));
  t.false(isDuplicateKey(serverError(11001)));
  t.false(isDuplicateKey(new Error("E11000 duplicate key error")));
  t.false(isDuplicateKey(null));
});

test("unavailable: driver network and selection errors, by class name", (t) => {
  t.true(isMongoUnavailable(driverError("MongoNetworkError", "connection reset")));
  t.true(isMongoUnavailable(driverError("MongoServerSelectionError", "no server")));
  t.true(isMongoUnavailable(driverError("AbortError", "aborted")));
  t.false(isMongoUnavailable(driverError("MongoServerError", "no code, no label")));
});

test("unavailable: a transient label makes any server error unavailable", (t) => {
  t.false(isMongoUnavailable(serverError(2)));
  for (const label of ["ResetPool", "RetryableWriteError", "TransientTransactionError"]) {
    t.true(isMongoUnavailable(serverError(2, "refused", [label])), label);
  }
  t.false(isMongoUnavailable(serverError(2, "refused", ["NoWritesPerformed"])));
});

test("unavailable: server codes of shutdown, failover and time limits; socket error codes", (t) => {
  for (const code of [6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436]) {
    t.true(isMongoUnavailable(serverError(code)), `code ${code}`);
  }
  t.true(isMongoUnavailable(driverError("Error", "x", { code: "ECONNRESET" })));
  t.true(isMongoUnavailable(driverError("Error", "x", { code: "ERR_SOCKET_CLOSED" })));
  t.false(isMongoUnavailable(driverError("Error", "x", { code: "ENOENT" })));
});

test("never by message: an error that only says 'network' or 'timed out' is not unavailable", (t) => {
  t.false(isMongoUnavailable(new Error("network error: connection timed out")));
  t.false(isMongoUnavailable(serverError(2, "not primary, network timeout")));
  t.false(isMongoUnavailable(undefined));
});

test("classify: UNAVAILABLE or FAILED with the code, the original kept as cause", (t) => {
  const down = driverError("MongoNetworkError", "reset");
  const unavailable = classifyMongoError("insert", down) as StoreError;
  t.true(unavailable instanceof StoreError);
  t.is(unavailable.code, "UNAVAILABLE");
  t.is(unavailable.message, "mongo insert: the database is unreachable");
  t.is(unavailable.cause, down);

  const refused = serverError(121);
  const failed = classifyMongoError("insert", refused) as StoreError;
  t.is(failed.code, "FAILED");
  t.is(failed.message, "mongo insert failed (code 121)");
  t.is(failed.cause, refused);
  t.is((classifyMongoError("find", new Error("odd")) as StoreError).message, "mongo find failed");
});

test("classify: store and sealing errors pass through unchanged", (t) => {
  const store = new StoreError("CONTENDED", "x");
  const sealing = new SealingError("DECRYPT_FAILED", "y");
  t.is(classifyMongoError("insert", store), store);
  t.is(classifyMongoError("insert", sealing), sealing);
});
