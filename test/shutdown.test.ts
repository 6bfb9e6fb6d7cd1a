// SIGTERM drains a real `npm start` process: health turns NOT_SERVING, streams
// end with UNAVAILABLE, a call in flight finishes, and the process exits 0.

import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import test from "ava";
import { protoPath as healthProtoPath } from "grpc-health-check";
import {
  GetTokenRequestSchema,
  StoreUpstreamTokensRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { startLocalIdp } from "../src/dev/local-idp.ts";
import { startDelayProxy } from "./support/delay-proxy.ts";
import { spawnServer } from "./support/server-process.ts";
import { api, getValid, grpcFailure } from "./support/stack.ts";

const _repo = new URL("..", import.meta.url).pathname;

function healthWatch(address: string, service: string) {
  const def = grpc.loadPackageDefinition(
    protoLoader.loadSync(healthProtoPath, { enums: String }),
  ) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  const client = new def.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  const seen: string[] = [];
  const call = (
    client as unknown as { watch(req: object): grpc.ClientReadableStream<{ status: string }> }
  ).watch({ service });
  call.on("data", (m: { status: string }) => seen.push(m.status));
  call.on("error", () => {});
  return { seen, close: () => client.close() };
}

test("SIGTERM: NOT_SERVING, streams end UNAVAILABLE, in-flight calls finish, exit 0", async (t) => {
  const idp = await startLocalIdp();
  t.teardown(() => idp.stop());
  const proxy = await startDelayProxy(idp.issuer);
  t.teardown(() => proxy.close());
  const client = idp.client("tokenvend");
  const yaml = [
    "grpc: { listen: 127.0.0.1:0 }",
    "http: { listen: 127.0.0.1:0 }",
    "auth: { disabled: true }",
    "shutdownGrace: 5s",
    "providers:",
    "  idp:",
    `    issuer: ${idp.issuer}`,
    `    tokenEndpoint: ${proxy.url}/token`,
    `    clientId: ${client.clientId}`,
    "    clientSecretEnv: IDP_SECRET",
    "    lifetime: { clockSkew: 5s, refreshMargin: 0s }",
    "grants:",
    "  demo: { provider: idp, scopes: [api:read] }",
  ].join("\n");
  const server = await spawnServer(yaml, { IDP_SECRET: client.clientSecret ?? "" });
  t.teardown(() => server.kill("SIGKILL"));
  const c = api(server.grpc);
  t.teardown(() => c.close());

  // A session whose token needs a refresh, and a slowed token endpoint.
  const minted = await idp.mintRefreshToken({ clientId: client.clientId, accountId: "alice" });
  await c.storeUpstreamTokens(
    create(StoreUpstreamTokensRequestSchema, {
      sessionId: "sess-drain",
      provider: "idp",
      accessToken: minted.accessToken,
      refreshToken: minted.refreshToken,
      expiry: { case: "expiresIn", value: 2n },
    }),
  );
  const stream = c.watch({ target: { case: "grant", value: "demo" } });
  const it = stream.messages[Symbol.asyncIterator]();
  t.truthy((await it.next()).value?.credential?.accessToken);
  const health = healthWatch(server.grpc, "tokenvend.v1.TokenService");
  t.teardown(health.close);
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(health.seen, ["SERVING"]);

  proxy.delayMs = 1_500;
  const inflight = c.getValidTokens(getValid("sess-drain"));
  await new Promise((r) => setTimeout(r, 300));
  const sentAt = Date.now();
  server.kill("SIGTERM");

  const end = grpcFailure(await t.throwsAsync(it.next()));
  t.is(end.code, grpc.status.UNAVAILABLE);
  t.is(end.reason, "SHUTTING_DOWN");
  const res = await inflight;
  t.is(res.credential?.generation, 2n);
  t.not(res.credential?.accessToken, minted.accessToken);
  t.is(await server.exited, 0);
  t.true(Date.now() - sentAt < 5_000);
  t.true(health.seen.includes("NOT_SERVING"));
  t.true(server.logs.some((l) => l.msg === "stopped"));
  // New calls are refused once it is gone.
  await t.throwsAsync(
    c.getToken(create(GetTokenRequestSchema, { grant: "demo" }), { deadlineMs: 1000 }),
  );
});
