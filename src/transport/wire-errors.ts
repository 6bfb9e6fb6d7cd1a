// What an error that ends a call becomes on the wire: one function, made once
// from the application's error table and given to both listeners, which apply
// it where a handler's error leaves the handler (so interceptors see the wire
// error) and again at the outer edge of the call (for an interceptor's own
// failure; a ConnectError it made already passes through unchanged).
//
// The rules, in order:
// 1. When the call's own signal aborted (client cancel, deadline, shutdown),
//    the abort's reason is the status, whatever the handler threw after it: a
//    store call cut short by a deadline is DEADLINE_EXCEEDED, not a store fault.
// 2. A ConnectError is sent as it is: its code and message were chosen for the caller.
// 3. Anything else goes through the application's table (toConnectError).
//    What it does not know becomes INTERNAL "internal error": messages may hold
//    secrets, so the original goes to onInternalError only, never on the wire.
//    A ConnectError with code INTERNAL is reported too, with its cause when it
//    has one: that is where a table that hid the message keeps the original.

import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

/** Called with the original error of every call that ends INTERNAL, to log it. */
export type InternalErrorHandler = (err: unknown, method: string) => void;

export interface WireErrorOptions {
  /** The application's error table; without it every error but a ConnectError is INTERNAL. */
  readonly toConnectError?: (err: unknown) => ConnectError;
  /** Gets the original error of every call that ends INTERNAL; the caller never sees it. */
  readonly onInternalError?: InternalErrorHandler;
}

/** The error that ends a call of `method`, as the caller gets it. */
export type WireErrors = (
  err: unknown,
  signal: AbortSignal | undefined,
  method: DescMethod,
) => ConnectError;

export function createWireErrors(opts: WireErrorOptions = {}): WireErrors {
  const { toConnectError = internalError, onInternalError } = opts;
  // Errors this function returned: passing again (the outer edge) changes and reports nothing.
  const mapped = new WeakSet<ConnectError>();
  return (err, signal, method) => {
    if (err instanceof ConnectError && mapped.has(err)) return err;
    let wire: ConnectError;
    if (signal?.aborted === true) {
      wire = signal.reason instanceof ConnectError ? signal.reason : cancelled(signal.reason);
    } else if (err instanceof ConnectError) {
      wire = err;
    } else {
      try {
        wire = toConnectError(err);
      } catch (failed) {
        wire = internalError(failed);
      }
      if (!(wire instanceof ConnectError)) wire = internalError(err);
    }
    if (wire.code === Code.Internal && !mapped.has(wire)) {
      report(onInternalError, wire.cause ?? wire, method);
    }
    mapped.add(wire);
    return wire;
  };
}

function internalError(cause: unknown): ConnectError {
  return new ConnectError("internal error", Code.Internal, undefined, undefined, cause);
}

/** An abort without a status of its own (the connection closed): the caller went away. */
function cancelled(reason: unknown): ConnectError {
  return new ConnectError("the call was cancelled", Code.Canceled, undefined, undefined, reason);
}

function report(onInternalError: InternalErrorHandler | undefined, err: unknown, m: DescMethod) {
  try {
    onInternalError?.(err, `/${m.parent.typeName}/${m.name}`);
  } catch {
    // A failing logger must not change what the caller gets.
  }
}
