// Property (fast-check): the refresh-claim protocol redeems each refresh token once, whatever
// the interleaving, against every store (memory, file, MongoDB on FerretDB). Two to four
// replicas (token vendors with their own caches and replica ids) share one store; a random set
// of callers, some forcing a refresh with a minimum validity, asks them for one expired key at
// once, while fast-check's scheduler picks the order in which the provider's answers arrive.
// Every refresh token reaches the provider at most once, and every redemption is one stored
// generation.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import fc from "fast-check";
import { systemClock } from "../src/core/clock.ts";
import { sessionKey } from "../src/core/token.ts";
import type { TokenStore } from "../src/core/token-store.ts";
import { createTokenVendor } from "../src/core/token-vendor.ts";
import type { UpstreamClient } from "../src/core/upstream.ts";
import { createFileStore } from "../src/store/file-store.ts";
import { createMemoryStore } from "../src/store/memory-store.ts";
import { createMongoStore } from "../src/store/mongo-store.ts";
import { ring } from "./support/file-store.ts";
import { useMongo } from "./support/mongo.ts";
import { uniqueSession } from "./support/store-contract.ts";
import { grants, providers, tuning } from "./support/vendor-harness.ts";

const mongo = useMongo(test, "tokenvend_claim_property");

/** The stores under test: `open(i)` is replica i's view of the one shared store. */
interface Shared {
  open(replica: number): TokenStore;
  close(): Promise<void>;
}

const backends: Record<string, { runs: number; shared: () => Promise<Shared> }> = {
  memory: {
    runs: 60,
    shared: async () => {
      const s = createMemoryStore();
      return { open: () => s, close: () => s.close() };
    },
  },
  file: {
    runs: 40,
    shared: async () => {
      const dir = await mkdtemp(join(tmpdir(), "tokenvend-claims-"));
      // One process per directory: every replica of this process shares the one store.
      const s = await createFileStore({ dir: join(dir, "store"), keyring: ring });
      return {
        open: () => s,
        close: async () => {
          await s.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
  mongo: {
    runs: 15,
    shared: async () => {
      const prefix = `p${Date.now().toString(36)}`;
      // A store per replica, as separate processes have, on one database.
      const stores = Array.from({ length: 4 }, () =>
        createMongoStore({
          client: mongo.client,
          dbName: "tokenvend_claim_property",
          keyring: ring,
          collectionPrefix: prefix,
        }),
      );
      await stores[0]?.ensureIndexes();
      return {
        open: (i) => stores[i] as TokenStore,
        close: async () => {
          for (const s of stores) await s.close();
        },
      };
    },
  },
};

// A one-hour token less the 30 s skew: asking for this much forces a refresh of any token.
const forcedMs = 3_600_000 - 30_000;

for (const [kind, backend] of Object.entries(backends)) {
  test(`${kind} store: each refresh token is redeemed once, whatever the interleaving`, async (t) => {
    const shared = await backend.shared();
    t.teardown(() => shared.close());
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.integer({ min: 2, max: 4 }),
        fc.array(fc.record({ replica: fc.nat(3), forced: fc.boolean() }), {
          minLength: 2,
          maxLength: 8,
        }),
        async (s, replicas, calls) => {
          const sessionId = uniqueSession("claims");
          const key = sessionKey(sessionId, "idp");
          const redeemed = new Map<string, number>();
          let issued = 0;
          const upstream: UpstreamClient = {
            clientCredentials: () => Promise.reject(new Error("no grants here")),
            revoke: async () => {},
            refresh: (_p, req) => {
              redeemed.set(req.refreshToken, (redeemed.get(req.refreshToken) ?? 0) + 1);
              issued++;
              return s.schedule(
                Promise.resolve({
                  accessToken: `at-${issued}`,
                  tokenType: "Bearer",
                  expiresInSec: 3600,
                  refreshToken: `rt-${sessionId}-${issued + 1}`,
                }),
                `answer to ${req.refreshToken}`,
              );
            },
          };
          const service = new AbortController();
          const vendors = Array.from({ length: replicas }, (_, i) =>
            createTokenVendor({
              ...tuning,
              claimPollMs: 5,
              forcedRefresh: { minIntervalMs: 0, budget: 1_000, windowMs: 1_000 },
              store: shared.open(i),
              upstream,
              providers,
              grants,
              clock: systemClock,
              random: Math.random,
              replicaId: `replica-${i}`,
              signal: service.signal,
            }),
          );
          const now = Date.now();
          await shared.open(0).insert({
            key,
            generation: 1,
            reason: "stored",
            tokens: {
              accessToken: "at-0",
              refreshToken: `rt-${sessionId}-1`,
              tokenType: "Bearer",
              scopes: [],
              issuedAt: now - 7_200_000,
              expiresAt: now - 3_600_000,
            },
          });
          try {
            const answers = await s.waitFor(
              Promise.allSettled(
                calls.map((c) =>
                  (vendors[c.replica % replicas] ?? vendors[0])?.getValidTokens({
                    sessionId,
                    provider: "idp",
                    ...(c.forced ? { minValidityMs: forcedMs } : {}),
                  }),
                ),
              ),
            );
            const stored = await shared.open(0).getActive(key);
            const once = [...redeemed.values()].every((n) => n === 1);
            const served = answers.every((a) => a.status === "fulfilled");
            return once && served && stored?.generation === 1 + redeemed.size;
          } finally {
            for (const v of vendors) await v.close();
            service.abort();
          }
        },
      ),
      { numRuns: backend.runs },
    );
    t.pass();
  });
}
