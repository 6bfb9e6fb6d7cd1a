// The store as the core uses it: an adapter's failure becomes STORE_UNAVAILABLE
// here, once, with the adapter's error kept as the cause. A stored generation
// that cannot be opened (UnreadableRecordError) is not a store that may come
// back: it is TOKEN_UNREADABLE (DATA_LOSS on the wire), reported once to
// `onUnreadable` (an error log and a metric). A call whose own signal was
// aborted by its caller (a cancel, a deadline) rejects with that reason
// instead: the caller left, the store did not fail. A store at its capacity
// (StoreFullError) is RESOURCE_EXHAUSTED (STORE_FULL). A timeout of the core's own
// (AbortSignal.timeout on a refresh) is a store that did not answer.

import { isTokenVendError, TokenVendError } from "./errors.ts";
import type { FlowStateStore } from "./flow-state-store.ts";
import {
  type StoreCallOptions,
  StoreFullError,
  type TokenStore,
  UnreadableRecordError,
} from "./token-store.ts";

/** Runs one store call, its failure classified (storeFailure); `onFailure` sees it first. */
function guardedBy(onFailure: (err: unknown) => void) {
  return async <T>(opts: StoreCallOptions | undefined, run: () => Promise<T>) => {
    try {
      return await run();
    } catch (err) {
      onFailure(err);
      throw storeFailure(err, opts?.signal);
    }
  };
}

export function classifiedStore(
  store: TokenStore,
  onUnreadable: (err: UnreadableRecordError) => void = () => {},
): TokenStore {
  const guard = guardedBy((err) => {
    if (err instanceof UnreadableRecordError) onUnreadable(err);
  });
  return {
    kind: store.kind,
    shared: store.shared,
    getActive: (key, o) => guard(o, () => store.getActive(key, o)),
    getSession: (id, o) => guard(o, () => store.getSession(id, o)),
    sessionGenerations: (id, o) => guard(o, () => store.sessionGenerations(id, o)),
    insert: (record, o) => guard(o, () => store.insert(record, o)),
    activeGenerations: (keys, o) => guard(o, () => store.activeGenerations(keys, o)),
    listActive: (page, o) => guard(o, () => store.listActive(page, o)),
    pruneBelow: (key, generation, o) => guard(o, () => store.pruneBelow(key, generation, o)),
    claim: (claim, o) => guard(o, () => store.claim(claim, o)),
    releaseClaim: (claim, o) => guard(o, () => store.releaseClaim(claim, o)),
    unusedSessions: (provider, q, o) => guard(o, () => store.unusedSessions(provider, q, o)),
    renewClaim: (claim, leaseUntil, renewal, o) =>
      guard(o, () => store.renewClaim(claim, leaseUntil, renewal, o)),
    openChangeFeed() {
      const feed = store.openChangeFeed();
      if (feed === undefined) return undefined;
      return {
        get method() {
          return feed.method;
        },
        read: (o) => guard(o, () => feed.read(o)),
        close: () => feed.close(),
      };
    },
    sweep: (now, o) => guard(o, () => store.sweep(now, o)),
    close: () => store.close(),
  };
}

/** The flows' state store, its failures classified the same way. */
export function classifiedFlowStates(states: FlowStateStore): FlowStateStore {
  const guard = guardedBy(() => {});
  return {
    kind: states.kind,
    create: (r, o) => guard(o, () => states.create(r, o)),
    get: (id, o) => guard(o, () => states.get(id, o)),
    replace: (r, o) => guard(o, () => states.replace(r, o)),
    remove: (id, o) => guard(o, () => states.remove(id, o)),
    sweep: (now, o) => guard(o, () => states.sweep(now, o)),
    close: () => states.close(),
  };
}

/** What a failed store call rejects with, given the signal it ran under. */
export function storeFailure(err: unknown, signal: AbortSignal | undefined): unknown {
  if (isTokenVendError(err)) return err;
  if (signal?.aborted && !isTimeout(signal.reason)) return signal.reason;
  if (err instanceof StoreFullError) {
    return new TokenVendError("RESOURCE_EXHAUSTED", err.message, {
      cause: err,
      reason: "STORE_FULL",
    });
  }
  if (err instanceof UnreadableRecordError) {
    return new TokenVendError(
      "TOKEN_UNREADABLE",
      "the stored token cannot be opened with this replica's encryption keys",
      { cause: err },
    );
  }
  return new TokenVendError("STORE_UNAVAILABLE", "the token store is unavailable", { cause: err });
}

function isTimeout(reason: unknown): boolean {
  return reason instanceof DOMException && reason.name === "TimeoutError";
}
