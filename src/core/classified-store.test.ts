// Store failures are classified once: an adapter's failure is STORE_UNAVAILABLE
// with its cause, a caller's cancel or deadline rejects with the caller's own
// reason (the store did not fail), and a core timeout is a store that did not
// answer. Proven on the store alone and through every caller-facing operation.

import test from "ava";
import { setup, tokens } from "../../test/support/vendor-harness.ts";
import { createMemoryStore } from "../store/memory-store.ts";
import { classifiedStore, storeFailure } from "./classified-store.ts";
import { isTokenVendError, TokenVendError } from "./errors.ts";
import { sessionKey } from "./token.ts";
import type { StoreCallOptions, TokenStore } from "./token-store.ts";

/** A store whose reads and writes wait until their signal aborts, then reject with its reason, as the adapters do. */
function hangingStore(inner: TokenStore = createMemoryStore()): TokenStore & { calls: number } {
  const hang = (o: StoreCallOptions | undefined) => {
    store.calls++;
    return new Promise<never>((_, reject) => {
      const signal = o?.signal;
      if (signal === undefined) return;
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  };
  const store = {
    ...inner,
    calls: 0,
    getActive: (_k: unknown, o?: StoreCallOptions) => hang(o),
    getSession: (_s: unknown, o?: StoreCallOptions) => hang(o),
    sessionGenerations: (_s: unknown, o?: StoreCallOptions) => hang(o),
    activeGenerations: (_k: unknown, o?: StoreCallOptions) => hang(o),
    insert: (_r: unknown, o?: StoreCallOptions) => hang(o),
  };
  return store;
}

const key = sessionKey("s1", "idp");

test("an adapter failure is STORE_UNAVAILABLE, with the adapter's error as its cause", async (t) => {
  const down = new Error("connection reset");
  const store = classifiedStore({ ...createMemoryStore(), getActive: () => Promise.reject(down) });
  const err = await t.throwsAsync(store.getActive(key), { instanceOf: TokenVendError });
  t.is(err?.code, "STORE_UNAVAILABLE");
  t.is(err?.message, "the token store is unavailable");
  t.is(err?.cause, down);
});

test("a caller's abort rejects with the caller's reason, not a store failure", async (t) => {
  const store = classifiedStore(hangingStore());
  const caller = new AbortController();
  const p = store.getActive(key, { signal: caller.signal });
  const reason = new Error("the client cancelled the call");
  caller.abort(reason);
  t.is(await t.throwsAsync(p), reason);
});

test("a timeout of the core's own is a store that did not answer: STORE_UNAVAILABLE", async (t) => {
  const store = classifiedStore(hangingStore());
  const err = await t.throwsAsync(store.getActive(key, { signal: AbortSignal.timeout(1) }));
  t.true(isTokenVendError(err, "STORE_UNAVAILABLE"));
  t.is((err as Error).cause instanceof DOMException, true);
});

test("a domain error passes unchanged; storeFailure without a signal wraps anything else", (t) => {
  const domain = new TokenVendError("STORE_UNAVAILABLE", "too many concurrent writers for one key");
  t.is(storeFailure(domain, AbortSignal.abort()), domain);
  t.true(isTokenVendError(storeFailure(new Error("x"), undefined), "STORE_UNAVAILABLE"));
});

test("a caller that cancels during StoreUpstreamTokens, GetAllUpstreamCredentials or RevokeSession gets its own reason back", async (t) => {
  const h = setup();
  const store = hangingStore();
  const vendor = setup({ extra: { store } }).vendor;
  const calls: [string, (s: AbortSignal) => Promise<unknown>][] = [
    [
      "store",
      (s) => vendor.storeUpstreamTokens({ sessionId: "s1", provider: "idp", tokens: tokens() }, s),
    ],
    ["all credentials", (s) => vendor.getAllUpstreamCredentials("s1", s)],
    ["revoke", (s) => vendor.revokeSession({ sessionId: "s1", revokeUpstream: false }, s)],
  ];
  for (const [what, call] of calls) {
    const caller = new AbortController();
    const before = store.calls;
    const p = call(caller.signal);
    await h.clock.settle();
    t.is(store.calls, before + 1, `${what} reached the store`);
    const reason = new Error(`deadline of ${what}`);
    caller.abort(reason);
    t.is(await t.throwsAsync(p), reason, what);
  }
});
