// The vendor's key cache under its bound: distinct session ids push the least recently used
// keys out, but never a key with a stream (it keeps being renewed and pushed to its streams)
// or with a refresh in flight (its callers get the renewal, and it stays cached after).

import test from "ava";
import { deferred } from "../../test/support/scripted-upstream.ts";
import {
  EXPIRED_AT,
  renewed,
  STALE_AT,
  seed,
  setup,
  watchQ,
} from "../../test/support/vendor-harness.ts";
import { watchStream } from "../../test/support/watch-stream.ts";

const bounded = () => setup({ extra: { cacheMaxKeys: 3 } });
const read = (h: ReturnType<typeof setup>, sessionId: string) =>
  h.vendor.getValidTokens({ sessionId, provider: "idp" });

test("distinct session ids never hold more than cacheMaxKeys; the least recently used go first", async (t) => {
  const h = bounded();
  for (let i = 0; i < 50; i++) {
    await seed(h, {}, `s-${i}`);
    await read(h, `s-${i}`);
    t.true(h.vendor.stats().cachedKeys <= 3);
  }
  const reads = h.store.counts.getActive;
  await read(h, "s-49");
  t.is(h.store.counts.getActive, reads, "the most recent key is still cached");
  await read(h, "s-0");
  t.is(h.store.counts.getActive, reads + 1, "the oldest was pushed out: read again");
});

test("a watched key pushed past the bound keeps its stream, and its renewal reaches it", async (t) => {
  const h = bounded();
  await seed(h);
  const ac = new AbortController();
  const stream = watchStream(h.vendor, watchQ, ac.signal);
  await stream.next();
  const next = stream.next();
  for (let i = 0; i < 10; i++) {
    await seed(h, {}, `other-${i}`);
    await read(h, `other-${i}`);
  }
  h.upstream.script("refresh", renewed(2));
  await h.clock.advanceTo(STALE_AT);
  t.is((await next).value?.record.generation, 2, "renewed in the background and pushed");
  t.is(h.vendor.stats().timers, 1, "its renewal timer is still armed");
  ac.abort();
  await stream.next();
});

test("a key whose refresh is in flight is not dropped under the bound: its callers get the renewal", async (t) => {
  const h = bounded();
  await seed(h);
  await h.clock.advanceTo(EXPIRED_AT);
  const reply = deferred();
  h.upstream.script("refresh", reply);
  const waiting = read(h, "s1");
  await reply.called;
  for (let i = 0; i < 10; i++) {
    await seed(h, { expiresAt: EXPIRED_AT + 3_600_000 }, `other-${i}`);
    await read(h, `other-${i}`);
  }
  reply.resolve({ accessToken: "at-2", tokenType: "Bearer", expiresInSec: 3600 });
  t.is((await waiting).generation, 2);
  const reads = h.store.counts.getActive;
  t.is((await read(h, "s1")).generation, 2);
  t.is(h.store.counts.getActive, reads, "still cached once its refresh ended");
});
