// The key cache alone: one entry per key, dropped entries never revived, idle
// entries evicted unless pinned, and eviction checked as new keys arrive.

import test from "ava";
import { createFakeClock, T0 } from "../../test/support/fake-clock.ts";
import { createKeyCache, type KeyEntry } from "./key-cache.ts";
import { sessionKey } from "./token.ts";

function cache(idleEvictMs = 10_000) {
  const clock = createFakeClock({ nowMs: T0 });
  const pinned = new Set<string>();
  const dropped: string[] = [];
  const c = createKeyCache({
    clock,
    idleEvictMs,
    pinned: (e: KeyEntry) => pinned.has(e.key.kind === "session" ? e.key.sessionId : ""),
    onDrop: (e) => dropped.push(e.key.kind === "session" ? e.key.sessionId : ""),
  });
  const entry = (id: string) => c.entry(sessionKey(id, "idp"), "idp");
  return { clock, c, pinned, dropped, entry };
}

test("one entry per key; a dropped entry is no longer held and its key gets a new one", (t) => {
  const { c, dropped, entry } = cache();
  const a = entry("a");
  t.is(entry("a"), a);
  t.is(c.size, 1);
  t.true(c.holds(a));
  c.drop(a);
  c.drop(a);
  t.deepEqual(dropped, ["a"], "onDrop once");
  t.false(c.holds(a));
  const again = entry("a");
  t.not(again, a);
  t.true(c.holds(again));
  t.false(c.holds(a), "the old entry stays dropped");
});

test("dropUnpinned keeps a pinned entry", (t) => {
  const { c, pinned, entry } = cache();
  const a = entry("a");
  pinned.add("a");
  c.dropUnpinned(a);
  t.true(c.holds(a));
  pinned.delete("a");
  c.dropUnpinned(a);
  t.false(c.holds(a));
});

test("evictIdle drops entries unused for longer than idleEvictMs, except pinned ones", async (t) => {
  const { c, clock, pinned, dropped, entry } = cache(10_000);
  entry("old");
  entry("pinned");
  pinned.add("pinned");
  await clock.advance(10_000);
  entry("new");
  c.evictIdle();
  t.deepEqual(dropped, [], "not idle for longer than 10 s yet");
  await clock.advance(1);
  c.evictIdle();
  t.deepEqual(dropped, ["old"]);
  t.deepEqual(
    [...c.entries()].map((e) => (e.key.kind === "session" ? e.key.sessionId : "")),
    ["pinned", "new"],
  );
});

test("without a sync, a new key triggers eviction at most every min(idleEvictMs, 60 s)", async (t) => {
  const { clock, dropped, entry } = cache(600_000);
  entry("a");
  await clock.advance(600_001);
  entry("b");
  t.deepEqual(dropped, ["a"], "the first new key after 60 s evicts");
  entry("c").lastUsedAt = clock.now() - 700_000;
  await clock.advance(59_999);
  entry("d");
  t.deepEqual(dropped, ["a"], "less than 60 s since the last eviction");
  await clock.advance(2);
  entry("e");
  t.deepEqual(dropped, ["a", "c"]);
});
