// `npm run bench:memory`: what a cached key and a stored record cost in heap, against the
// estimates the bounds count with (key-cache.ts entryBytes, token-store.ts recordBytes).
// N sessions with tokens the size of a real provider's (a 1.2 KB JWT access token, a 64-byte
// refresh token, a 0.4 KB id token: ~1.7 KB) are stored through the vendor into the memory
// store (copied in and out, as a decoding store does) and read once, so each has its cache entry
// and its record; the heap is measured after a full GC before and after. Then the cache is
// emptied (idle eviction) and measured again: the difference is the cache's share, the rest the
// store's. Not counted: the response built once per generation by the RPC layer (about the
// tokens' size again, which entryBytes counts).
//
// Options (env): BENCH_KEYS (default 50000), BENCH_ROUNDS (3).

import { cpus, totalmem } from "node:os";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { configDefaults } from "../src/config.ts";
import { systemClock } from "../src/core/clock.ts";
import { entryBytes, type KeyEntry } from "../src/core/key-cache.ts";
import { recordBytes, type TokenStore } from "../src/core/token-store.ts";
import { createTokenVendor } from "../src/core/token-vendor.ts";
import { createMemoryStore } from "../src/store/memory-store.ts";
import { tuning } from "../test/support/vendor-harness.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const keys = Number(process.env.BENCH_KEYS ?? 50_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);

const heap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
const b64 = (n: number, seed: number) =>
  Buffer.alloc(Math.ceil((n * 3) / 4), seed % 251)
    .toString("base64url")
    .slice(0, n);

async function round(r: number) {
  // Copies in and out, as a store that decodes documents (file, MongoDB) hands the cache its own.
  const inner = createMemoryStore();
  const store: TokenStore = {
    ...inner,
    insert: (record, o) => inner.insert(structuredClone(record), o),
    getActive: async (key, o) => structuredClone(await inner.getActive(key, o)),
  };
  const service = new AbortController();
  let now = Date.now();
  const vendor = createTokenVendor({
    store,
    upstream: {
      clientCredentials: () => Promise.reject(new Error("unused")),
      refresh: () => Promise.reject(new Error("unused")),
      revoke: async () => {},
    },
    providers: new Map([
      ["idp", { lifetime: configDefaults.lifetime, backoff: configDefaults.backoff }],
    ]),
    grants: new Map(),
    signal: service.signal,
    clock: { ...systemClock, now: () => now },
    ...tuning,
    cacheMaxKeys: keys * 2,
    cacheMaxBytes: 8 * 1024 ** 3,
  });
  const before = heap();
  let estimatedEntries = 0;
  let estimatedRecords = 0;
  for (let i = 0; i < keys; i++) {
    const sessionId = `session-${r}-${i.toString(36).padStart(8, "0")}`;
    const tokens = {
      accessToken: b64(1_200, i),
      refreshToken: b64(64, i + 1),
      idToken: b64(400, i + 2),
      tokenType: "Bearer",
      scopes: ["openid", "offline_access", "api:read"],
      issuedAt: now,
      expiresAt: now + 3_600_000,
      subject: `user-${i}`,
    };
    await vendor.storeUpstreamTokens({ sessionId, provider: "idp", tokens });
    const record = await vendor.getValidTokens({ sessionId, provider: "idp" });
    estimatedRecords += recordBytes(record);
    estimatedEntries += entryBytes({ id: `${sessionId}\u001fidp`, record } as KeyEntry);
  }
  const full = heap();
  now += configDefaults.idleEvictMs + 120_000;
  // A new key runs the idle eviction (no sync loop here): every other entry leaves.
  await vendor.storeUpstreamTokens({
    sessionId: "last",
    provider: "idp",
    tokens: {
      accessToken: "a",
      tokenType: "Bearer",
      scopes: [],
      issuedAt: now,
      expiresAt: now + 1,
    },
  });
  const storeOnly = heap();
  const cached = vendor.stats().cachedKeys;
  await vendor.close();
  service.abort();
  return {
    perKeyBoth: (full - before) / keys,
    perCacheEntry: (full - storeOnly) / keys,
    perRecord: (storeOnly - before) / keys,
    estimatedEntry: estimatedEntries / keys,
    estimatedRecord: estimatedRecords / keys,
    cachedAfterEviction: cached,
  };
}

console.log(
  `bench:memory: ${keys} keys, ${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${Math.round(totalmem() / 1024 ** 3)} GiB, node ${process.version}`,
);
const f = (n: number) => `${Math.round(n).toLocaleString("en")} B`;
for (let r = 1; r <= rounds; r++) {
  const m = await round(r);
  console.log(
    `round ${r}: per key ${f(m.perKeyBoth)} (cache entry ${f(m.perCacheEntry)}, estimated ${f(m.estimatedEntry)}; store record ${f(m.perRecord)}, estimated ${f(m.estimatedRecord)}); ${m.cachedAfterEviction} left cached after idle eviction`,
  );
}
