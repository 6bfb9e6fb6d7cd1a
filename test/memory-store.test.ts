import test from "ava";
import { createMemoryStore } from "../src/store/memory-store.ts";
import { claimContract, storeContract } from "./support/store-contract.ts";

storeContract(test, "memory store", { create: async () => createMemoryStore() });
claimContract(test, "memory store", { create: async () => createMemoryStore() });

test("a memory store is not shared: no other process can write it", async (t) => {
  const store = createMemoryStore();
  t.false(store.shared);
  await store.close();
});
