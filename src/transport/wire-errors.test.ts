import { Code, ConnectError } from "@connectrpc/connect";
import test from "ava";
import { createWireErrors, type WireErrors } from "./wire-errors.ts";

// Only its names are read: where onInternalError says the call was.
const method = { name: "Get", parent: { typeName: "test.v1.Things" } } as Parameters<WireErrors>[2];
const path = "/test.v1.Things/Get";

/** A domain error of some application, and its table. */
class NotThere extends Error {}
const table = (err: unknown) =>
  err instanceof NotThere
    ? new ConnectError("no such thing", Code.NotFound)
    : new ConnectError("internal error", Code.Internal, undefined, undefined, err);

function mapper(toConnectError?: (err: unknown) => ConnectError) {
  const reported: [string, string][] = [];
  const errors = createWireErrors({
    ...(toConnectError !== undefined ? { toConnectError } : {}),
    onInternalError: (err, m) => reported.push([m, (err as Error).message]),
  });
  return { errors, reported };
}

const open = () => new AbortController().signal;

test("a ConnectError passes as it is, and is not reported", (t) => {
  const { errors, reported } = mapper(table);
  const err = new ConnectError("no grant named x", Code.NotFound);
  t.is(errors(err, open(), method), err);
  t.deepEqual(reported, []);
});

test("a domain error goes through the application's table", (t) => {
  const { errors, reported } = mapper(table);
  const wire = errors(new NotThere("session s1"), open(), method);
  t.is(wire.code, Code.NotFound);
  t.is(wire.rawMessage, "no such thing");
  t.deepEqual(reported, []);
});

test("an unknown error is INTERNAL 'internal error', its original only reported", (t) => {
  for (const toConnectError of [table, undefined]) {
    const { errors, reported } = mapper(toConnectError);
    const wire = errors(new Error("mongodb://admin:hunter2@db refused"), open(), method);
    t.is(wire.code, Code.Internal);
    t.is(wire.rawMessage, "internal error");
    t.deepEqual(wire.details, []);
    t.deepEqual(reported, [[path, "mongodb://admin:hunter2@db refused"]]);
  }
});

test("cancel, deadline and shutdown win over a domain error thrown after them, and are not reported", (t) => {
  for (const reason of [
    new ConnectError("the client cancelled the call", Code.Canceled),
    new ConnectError("the operation timed out", Code.DeadlineExceeded),
    new ConnectError("the server is shutting down", Code.Unavailable),
  ]) {
    const { errors, reported } = mapper(table);
    const ac = new AbortController();
    ac.abort(reason);
    t.is(errors(new NotThere("store call aborted"), ac.signal, method), reason);
    t.is(errors(new Error("socket closed"), ac.signal, method), reason);
    t.is(errors(new ConnectError("store down", Code.Unavailable), ac.signal, method), reason);
    t.deepEqual(reported, []);
  }
});

test("an abort without a status of its own (the connection closed) is CANCELLED", (t) => {
  const { errors, reported } = mapper(table);
  const ac = new AbortController();
  ac.abort();
  const wire = errors(new NotThere("x"), ac.signal, method);
  t.is(wire.code, Code.Canceled);
  t.deepEqual(reported, []);
});

test("an error mapped once passes again unchanged and is reported once (outer edge)", (t) => {
  const { errors, reported } = mapper(table);
  const signal = open();
  const once = errors(new Error("boom"), signal, method);
  t.is(errors(once, signal, method), once);
  t.is(reported.length, 1);
  // A handler's own INTERNAL ConnectError is reported with its cause, once.
  const own = new ConnectError(
    "internal error",
    Code.Internal,
    undefined,
    undefined,
    new Error("why"),
  );
  t.is(errors(errors(own, signal, method), signal, method), own);
  t.deepEqual(reported.slice(1), [[path, "why"]]);
});

test("a table or a logger that throws does not change what the caller gets", (t) => {
  const errors = createWireErrors({
    toConnectError: () => {
      throw new Error("table broke");
    },
    onInternalError: () => {
      throw new Error("logger broke");
    },
  });
  const wire = errors(new NotThere("x"), open(), method);
  t.is(wire.code, Code.Internal);
  t.is(wire.rawMessage, "internal error");
});
