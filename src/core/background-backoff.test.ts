// A background renewal that fails with a domain error (a flow's UPSTREAM_UNAVAILABLE, a token
// that does not open, a store down) backs off like a provider failure: without it the key
// would be due again at once, a hot loop at the provider and in the store.

import test from "ava";
import { fails } from "../../test/support/scripted-upstream.ts";
import { renewed, STALE_AT, seed, setup, watchQ } from "../../test/support/vendor-harness.ts";
import { watchStream } from "../../test/support/watch-stream.ts";
import { type ErrorCode, TokenVendError } from "./errors.ts";

/** A stored key with one stream past its first message; `next` is the stream's next event. */
async function watching() {
  const h = setup();
  await seed(h);
  const ac = new AbortController();
  const stream = watchStream(h.vendor, watchQ, ac.signal);
  await stream.next();
  return { h, ac, stream, next: stream.next() };
}

for (const code of ["UPSTREAM_UNAVAILABLE", "TOKEN_UNREADABLE", "STORE_UNAVAILABLE"] as const) {
  test(`watch: a background refresh failing with ${code} backs off 1 s, 2 s, 4 s, then renews`, async (t) => {
    const { h, ac, stream, next } = await watching();
    const failure = () => fails(new TokenVendError(code as ErrorCode, `failed: ${code}`));
    h.upstream.script("refresh", failure(), failure(), failure(), failure());
    await h.clock.advanceTo(STALE_AT);
    t.is(h.upstream.count("refresh"), 1);
    // 10 s later: attempts at +1 s, +3 s and +7 s only (the next is at +15 s).
    await h.clock.advance(10_000);
    t.is(h.upstream.count("refresh"), 4);
    t.is(h.clock.nextDueInMs(), 5_000);
    h.upstream.script("refresh", renewed(2));
    await h.clock.advance(5_000);
    t.is(h.upstream.count("refresh"), 5);
    t.is((await next).value?.record.generation, 2);
    ac.abort();
    await stream.next();
  });
}

test("a refresh failing for good (REFRESH_FAILED) is not retried in the background", async (t) => {
  const { h, ac, next } = await watching();
  h.upstream.script("refresh", fails(new TokenVendError("REFRESH_FAILED", "rejected")));
  await h.clock.advanceTo(STALE_AT);
  await h.clock.advance(60_000);
  t.is(h.upstream.count("refresh"), 1);
  ac.abort();
  await next.catch(() => undefined);
});
