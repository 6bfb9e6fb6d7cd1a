// After an outage: 10,000 keys whose tokens all expired, every one asked for at once. A real
// token endpoint over HTTP (a loopback server that counts the requests in flight and every
// refresh token it redeems) sees at most limits.providers.maxConcurrent requests at a time,
// and every key is renewed exactly once: each refresh token redeemed once, every caller served
// generation 2. The memory store, so the run takes seconds.

import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import test from "ava";
import { parseConfig } from "../src/config.ts";
import { sessionKey } from "../src/core/token.ts";
import { startServer } from "../src/server.ts";
import { createMemoryStore } from "../src/store/memory-store.ts";

const keys = 10_000;
const maxConcurrent = 4;

/** A token endpoint answering refresh grants after a millisecond, counting what it sees. */
async function tokenEndpoint() {
  let active = 0;
  let maxActive = 0;
  const redeemed = new Map<string, number>();
  const server = createServer((req, res) => {
    active++;
    maxActive = Math.max(maxActive, active);
    let body = "";
    req.setEncoding("utf8").on("data", (d: string) => {
      body += d;
    });
    req.on("end", () => {
      const rt = new URLSearchParams(body).get("refresh_token") ?? "";
      redeemed.set(rt, (redeemed.get(rt) ?? 0) + 1);
      // A millisecond at the provider: enough for the requests to pile up against the limit.
      setTimeout(() => {
        active--;
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({
            access_token: `at-${rt}-renewed`,
            refresh_token: `${rt}-next`,
            token_type: "Bearer",
            expires_in: 3600,
          }),
        );
      }, 1);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/token`,
    get maxActive() {
      return maxActive;
    },
    redeemed,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test("10,000 expired keys asked for at once: at most maxConcurrent requests at the provider, each key renewed once", async (t) => {
  const idp = await tokenEndpoint();
  t.teardown(idp.close);
  const store = createMemoryStore();
  const now = Date.now();
  for (let i = 0; i < keys; i++) {
    await store.insert({
      key: sessionKey(`s-${i}`, "idp"),
      generation: 1,
      reason: "stored",
      tokens: {
        accessToken: `at-${i}`,
        refreshToken: `rt-${i}`,
        tokenType: "Bearer",
        scopes: [],
        issuedAt: now - 7_200_000,
        expiresAt: now - 3_600_000,
      },
    });
  }
  const config = parseConfig(
    {
      grpc: { listen: "127.0.0.1:0" },
      http: { listen: "127.0.0.1:0" },
      logLevel: "silent",
      providers: {
        idp: {
          tokenEndpoint: idp.url,
          allowInsecureHttp: true,
          clientId: "tokenvend",
          clientSecretEnv: "S",
          timeout: "30s",
          // The rate is not what this test measures: high enough not to pace it.
          limits: { maxConcurrent, ratePerSecond: 100_000, maxQueued: keys },
        },
      },
    },
    { env: { S: "secret" }, readFile: () => "" },
  );
  const server = await startServer({ config, store });
  t.teardown(() => server.shutdown());
  const deadline = AbortSignal.timeout(120_000);
  const got = await Promise.all(
    Array.from({ length: keys }, (_, i) =>
      server.vendor.getValidTokens({ sessionId: `s-${i}`, provider: "idp" }, deadline),
    ),
  );
  t.true(
    got.every((r, i) => r.generation === 2 && r.tokens.accessToken === `at-rt-${i}-renewed`),
    "every caller got its key's renewal",
  );
  t.is(idp.redeemed.size, keys);
  t.true(
    [...idp.redeemed.values()].every((n) => n === 1),
    "each refresh token redeemed once",
  );
  t.true(idp.maxActive <= maxConcurrent, `${idp.maxActive} requests at once`);
  t.is(idp.maxActive, maxConcurrent, "and the limit was reached: the test can fail");
});
