// How the MongoDB adapter runs one database command: under the caller's signal combined with a
// per-command bound (so nothing waits forever, even without a caller signal), refused once the
// store is closed, its failures classified once (./mongo-errors.ts). A caller's abort rejects
// with the signal's reason, unwrapped.

import { MongoTopologyClosedError } from "mongodb";
import type { StoreCallOptions } from "../core/token-store.ts";
import { classifyMongoError } from "./mongo-errors.ts";
import { StoreError } from "./store-error.ts";

/** Runs one database command, named `what` in errors, with the signal it must pass on. */
export type MongoRun = <T>(
  what: string,
  callOpts: StoreCallOptions | undefined,
  fn: (signal: AbortSignal) => Promise<T>,
) => Promise<T>;

/**
 * `reopen` connects the client again: the driver leaves a client whose first connect failed
 * closed for good ("Topology is closed") until connect() runs again, so a command that meets a
 * closed topology while the store is open reopens it and runs once more.
 */
export function createMongoRun(
  timeoutMs: number,
  isClosed: () => boolean,
  reopen: () => Promise<unknown>,
): MongoRun {
  return (what, callOpts, fn) => {
    if (isClosed())
      return Promise.reject(new StoreError("UNAVAILABLE", `mongo ${what}: the store is closed`));
    const once = (signal: AbortSignal) =>
      fn(signal).catch(async (err: unknown) => {
        if (!(err instanceof MongoTopologyClosedError) || isClosed()) throw err;
        await reopen();
        return fn(signal);
      });
    return withDeadline(`mongo ${what}`, callOpts?.signal, timeoutMs, once, (err) =>
      classifyMongoError(what, err),
    );
  };
}

/**
 * Driver 7 honours `signal` on every operation at runtime (executeOperation hands
 * `options.signal` to server selection, pool check-out and the socket), but declares it only on
 * reads. Its `timeoutMS` is a deprecated no-op in 7.x, so the bound comes from our own signal.
 */
export function withSignal<T extends object>(options: T, signal: AbortSignal): T {
  return { ...options, signal } as T;
}

/**
 * Runs `fn` under the caller's signal combined with an upper bound of `timeoutMs`, so no store
 * call waits forever even when the caller passed no signal. A caller's abort surfaces as its
 * `signal.reason`; the bound surfaces as StoreError UNAVAILABLE; other errors go to `classify`.
 */
async function withDeadline<T>(
  what: string,
  callerSignal: AbortSignal | undefined,
  timeoutMs: number,
  fn: (signal: AbortSignal) => Promise<T>,
  classify: (err: unknown) => unknown,
): Promise<T> {
  callerSignal?.throwIfAborted();
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = callerSignal === undefined ? timeout : AbortSignal.any([callerSignal, timeout]);
  try {
    return await fn(signal);
  } catch (err) {
    if (callerSignal?.aborted) throw callerSignal.reason;
    if (timeout.aborted) {
      throw new StoreError("UNAVAILABLE", `${what}: no answer within ${timeoutMs} ms`, {
        cause: err,
      });
    }
    throw classify(err);
  }
}
