// The memory and file stores under a configured capacity (limits.store): a new key beyond
// maxKeys or maxBytes is refused with StoreFullError, a new generation of a key held always
// lands, and a revoked key leaves tombstoneRetention after its revocation, freeing its place.
// Through a server: StoreUpstreamTokens beyond it is RESOURCE_EXHAUSTED (STORE_FULL) and the
// server keeps serving; the flow state stores refuse past limits.flowStates.maxRecords.

import { mkdir } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import test from "ava";
import { GetValidTokensRequestSchema } from "../gen/tokenvend/v1/token_service_pb.js";
import type { FlowRecord } from "../src/core/flow-state-store.ts";
import { sessionKey, type TokenRecord } from "../src/core/token.ts";
import { type StoreCapacity, StoreFullError, type TokenStore } from "../src/core/token-store.ts";
import { createFileStore } from "../src/store/file-store.ts";
import { createFileFlowStates } from "../src/store/flow-state-file.ts";
import { createMemoryFlowStates } from "../src/store/flow-state-memory.ts";
import { createMemoryStore } from "../src/store/memory-store.ts";
import { ring, tempDirs } from "./support/file-store.ts";
import { grpcFailureDetail, startStack } from "./support/stack.ts";

const newDir = tempDirs(test);
const T = 1_700_000_000_000;
const capacity: StoreCapacity = {
  maxKeys: 3,
  maxBytes: 1024 * 1024,
  tombstoneRetentionMs: 60_000,
};

const live = (sessionId: string, generation = 1, accessToken = "at"): TokenRecord => ({
  key: sessionKey(sessionId, "idp"),
  generation,
  reason: "stored",
  tokens: {
    accessToken,
    refreshToken: "rt",
    tokenType: "Bearer",
    scopes: [],
    issuedAt: T,
    expiresAt: T + 3_600_000,
  },
});
const revoked = (sessionId: string, generation: number): TokenRecord => ({
  key: sessionKey(sessionId, "idp"),
  generation,
  reason: "revoked",
});

const stores: Record<string, (c: StoreCapacity, now: () => number) => Promise<TokenStore>> = {
  memory: async (c, now) => createMemoryStore({ capacity: c, now }),
  file: async (c, now) => createFileStore({ dir: await newDir(), keyring: ring, capacity: c, now }),
};

for (const [kind, open] of Object.entries(stores)) {
  test(`${kind} store: beyond maxKeys a new key is StoreFullError naming the option; its keys still renew`, async (t) => {
    const store = await open(capacity, () => T);
    t.teardown(() => store.close());
    for (const id of ["a", "b", "c"]) await store.insert(live(id));
    const err = await t.throwsAsync(store.insert(live("d")), { instanceOf: StoreFullError });
    t.is(
      err?.message,
      `the ${kind} store is full: it holds 3 keys, its capacity (limits.store.maxKeys); revoke sessions or raise the limit`,
    );
    t.deepEqual(await store.insert(live("a", 2)), { inserted: true }, "a new generation lands");
    t.deepEqual(await store.insert(revoked("b", 2)), { inserted: true }, "so does a revocation");
    t.is(await store.getActive(sessionKey("d", "idp")), undefined);
  });

  test(`${kind} store: beyond maxBytes a new key is refused; it fits once old generations are swept`, async (t) => {
    const store = await open({ ...capacity, maxKeys: 1_000 }, () => T);
    t.teardown(() => store.close());
    // Two such records fit in 1 MiB, three do not (as either store counts them).
    const big = "x".repeat(370 * 1024);
    await store.insert(live("a", 1, big));
    await store.insert(live("b", 1, big));
    const err = await t.throwsAsync(store.insert(live("c", 1, big)), {
      instanceOf: StoreFullError,
    });
    t.regex(err?.message ?? "", /bytes \(limits\.store\.maxBytes\) in use/);
    await store.insert(revoked("a", 2));
    await store.sweep(T);
    t.deepEqual(await store.insert(live("c", 1, big)), { inserted: true });
  });

  test(`${kind} store: a revoked key keeps its place for tombstoneRetention, then leaves and frees it`, async (t) => {
    const store = await open(capacity, () => T);
    t.teardown(() => store.close());
    for (const id of ["a", "b", "c"]) await store.insert(live(id));
    await store.insert(revoked("b", 2));
    await store.sweep(T + 59_000);
    await t.throwsAsync(store.insert(live("d")), { instanceOf: StoreFullError });
    const swept = await store.sweep(T + 60_001);
    t.is(swept.generations, 1, "the revocation, the last of its key");
    t.deepEqual(await store.insert(live("d")), { inserted: true });
    t.is(await store.getActive(sessionKey("b", "idp")), undefined);
  });
}

test("flow state stores: beyond maxRecords a new pending login is StoreFullError", async (t) => {
  const record = (id: string): FlowRecord => ({
    id,
    expiresAt: Date.now() + 60_000,
    fields: { kind: "authorization", provider: "idp" },
    secrets: { verifier: "v" },
  });
  const memory = createMemoryFlowStates(2);
  const dir = await newDir();
  await mkdir(dir, { recursive: true });
  const file = await createFileFlowStates({ dir, keyring: ring, maxRecords: 2 });
  for (const [kind, s] of [
    ["memory", memory],
    ["file", file],
  ] as const) {
    t.true(await s.create(record("a")));
    t.true(await s.create(record("b")));
    const err = await t.throwsAsync(s.create(record("c")), {
      instanceOf: StoreFullError,
    });
    t.regex(err?.message ?? "", new RegExp(`the ${kind} flow state store is full: 2 pending`));
  }
});

test("StoreUpstreamTokens into a full store: RESOURCE_EXHAUSTED (STORE_FULL), and the stored keys keep being served", async (t) => {
  const s = await startStack({ config: { limits: { store: { maxKeys: 2 } } } });
  t.teardown(s.stop);
  await s.store("full-1", await s.mint(), 300);
  await s.store("full-2", await s.mint(), 300);
  const err = await t.throwsAsync(s.store("full-3", await s.mint(), 300));
  const f = grpcFailureDetail(err);
  t.is(f.code, 8);
  t.is(f.reason, "STORE_FULL");
  t.regex(f.message, /the memory store is full: it holds 2 keys/);
  t.false(f.message.includes("rt"), "no token material in the message");
  const again = await s.store("full-1", await s.mint(), 300);
  t.is(again, 2n, "a stored key takes a new generation");
  const got = await s.client.getValidTokens(
    create(GetValidTokensRequestSchema, { sessionId: "full-2", provider: "idp" }),
  );
  t.is(got.credential?.generation, 1n);
});
