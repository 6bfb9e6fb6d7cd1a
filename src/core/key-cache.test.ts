// The key cache alone: one entry per key, dropped entries never revived, idle
// entries evicted unless pinned, and eviction checked as new keys arrive.

import test from "ava";
import { createFakeClock, T0 } from "../../test/support/fake-clock.ts";
import { createKeyCache, entryBytes, entryFixedBytes, type KeyEntry } from "./key-cache.ts";
import { keyId, sessionKey } from "./token.ts";

function cache(idleEvictMs = 10_000, bounds = { maxEntries: 1_000, maxBytes: 64 * 1024 * 1024 }) {
  const clock = createFakeClock({ nowMs: T0 });
  const pinned = new Set<string>();
  const dropped: string[] = [];
  const c = createKeyCache({
    clock,
    idleEvictMs,
    ...bounds,
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
    [...c.entries()].map((e) => (e.key.kind === "session" ? e.key.sessionId : "")).sort(),
    ["new", "pinned"],
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

const idsOf = (c: { entries(): IterableIterator<KeyEntry> }) =>
  [...c.entries()].map((e) => (e.key.kind === "session" ? e.key.sessionId : "")).sort();

test("bounded by entries: a new key pushes out the least recently used one", (t) => {
  const { c, dropped, entry } = cache(600_000, { maxEntries: 3, maxBytes: 1 << 30 });
  entry("a");
  entry("b");
  entry("c");
  entry("a"); // used again: b is now the least recently used
  entry("d");
  t.deepEqual(dropped, ["b"]);
  t.is(c.size, 3);
  t.deepEqual(idsOf(c), ["a", "c", "d"]);
});

test("bounded by bytes: entries whose estimated size passes maxBytes push the oldest out", (t) => {
  const one = entryBytes({ id: keyId(sessionKey("a", "idp")), record: undefined } as KeyEntry);
  const { c, dropped, entry } = cache(600_000, { maxEntries: 1_000, maxBytes: 3 * one });
  for (const id of ["a", "b", "c", "d", "e"]) entry(id);
  t.deepEqual(dropped, ["a", "b"]);
  t.true(c.bytes <= 3 * one);
});

test("a record's size is counted when it changes (resized): a big token pushes others out", (t) => {
  const small = entryBytes({ id: keyId(sessionKey("a", "idp")), record: undefined } as KeyEntry);
  const { c, dropped, entry } = cache(600_000, { maxEntries: 1_000, maxBytes: 4 * small });
  const a = entry("a");
  entry("b");
  entry("c");
  a.record = {
    key: a.key,
    generation: 1,
    reason: "stored",
    tokens: {
      // Sized to about 3.5 small entries: a and one other pass maxBytes, a alone does not.
      accessToken: "x".repeat(Math.ceil((3.5 * small - entryFixedBytes) / 2 - a.id.length)),
      tokenType: "Bearer",
      scopes: [],
      issuedAt: T0,
      expiresAt: T0 + 1,
    },
  };
  c.resized(a);
  t.true(entryBytes(a) > 3 * small && entryBytes(a) < 4 * small);
  t.deepEqual(dropped, ["b", "c"], "a, now the largest and most recently used, stays");
  t.true(c.holds(a));
});

test("a pinned entry the bounds push out is held aside, found, and dropped only once unpinned", async (t) => {
  const { c, clock, pinned, dropped, entry } = cache(600_000, { maxEntries: 2, maxBytes: 1 << 30 });
  const a = entry("a");
  pinned.add("a");
  entry("b");
  entry("c");
  t.deepEqual(dropped, [], "a is pinned: set aside, not dropped");
  t.true(c.holds(a));
  t.is(c.find(a.id), a);
  t.is(c.size, 3);
  c.evictIdle();
  t.deepEqual(dropped, [], "still pinned");
  pinned.delete("a");
  await clock.advance(1);
  c.evictIdle();
  t.deepEqual(dropped, ["a"], "unpinned: dropped at the next sweep");
  t.false(c.holds(a));
  t.deepEqual(idsOf(c), ["b", "c"]);
});

test("an entry set aside and used again comes back among the most recently used", (t) => {
  const { c, pinned, dropped, entry } = cache(600_000, { maxEntries: 2, maxBytes: 1 << 30 });
  const a = entry("a");
  pinned.add("a");
  entry("b");
  entry("c");
  pinned.delete("a");
  t.is(entry("a"), a, "the same entry, not a new one");
  t.deepEqual(dropped, ["b"], "taking its place back pushed out the least recently used");
  t.deepEqual(idsOf(c), ["a", "c"]);
});

test("many distinct keys never hold more than maxEntries, whatever their number", (t) => {
  const { c, entry } = cache(600_000, { maxEntries: 100, maxBytes: 1 << 30 });
  for (let i = 0; i < 10_000; i++) entry(`s${i}`);
  t.is(c.size, 100);
});
