// WatchToken across a cluster: replica processes on one FerretDB, streams held
// by real @grpc/grpc-js clients on both replicas.

import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import test from "ava";
import { RenewalReason, RevokeSessionRequestSchema } from "../gen/tokenvend/v1/token_service_pb.js";
import { startCluster } from "./support/cluster.ts";
import { mongoForTests } from "./support/mongo.ts";
import { grpcFailure } from "./support/stack.ts";

let mongo: { uri: string; stop(): Promise<void> };
test.before(async () => {
  mongo = await mongoForTests();
});
test.after.always(async () => {
  await mongo?.stop();
});

type Api = Awaited<ReturnType<typeof startCluster>>["clients"][number];

function watchSession(client: Api, sessionId: string) {
  const s = client.watch({ target: { case: "session", value: { sessionId, provider: "idp" } } });
  return { ...s, it: s.messages[Symbol.asyncIterator]() };
}

// Renewals every few seconds: 8 s tokens, fresh for 30% of their life.
const fast = {
  accessTokenTtlSec: 8,
  lifetime: "{ freshness: 0.3, refreshMargin: 0s, clockSkew: 1s, refreshJitter: 0.1 }",
};

test.serial(
  "subscribers on two replicas see every renewal with the same generation; one IdP request per renewal",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2, fast);
    await c.store("sess-w", 8);
    const streams = [0, 0, 0, 1, 1, 1].map((i) => watchSession(c.clients[i]!, "sess-w"));
    for (const s of streams) t.teardown(() => s.cancel());
    const firsts = await Promise.all(streams.map((s) => s.it.next()));
    t.true(
      firsts.every(
        (f) => f.value?.reason === RenewalReason.INITIAL && f.value.credential?.generation === 1n,
      ),
    );
    const seen = await Promise.all(
      streams.map(async (s) => {
        const got: { generation: bigint; token: string }[] = [];
        while (got.length < 2) {
          const m = await s.it.next();
          if (m.done === true) throw new Error(`the stream ended after ${got.length} renewals`);
          const cred = m.value?.credential;
          if (cred !== undefined)
            got.push({ generation: cred.generation, token: cred.accessToken });
        }
        return got;
      }),
    );
    for (const got of seen)
      t.deepEqual(
        got.map((g) => g.generation),
        [2n, 3n],
      );
    t.is(new Set(seen.map((g) => g[0]!.token)).size, 1);
    t.is(new Set(seen.map((g) => g[1]!.token)).size, 1);
    t.is(c.idp.counters.tokenRequests.refresh_token, 2);
    t.is(c.idp.counters.invalidGrant, 0);
  },
);

test.serial(
  "a revocation through either replica ends every stream of the key, on both, with NOT_FOUND",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2);
    await c.store("sess-r", 300);
    const streams = [0, 1, 1].map((i) => watchSession(c.clients[i]!, "sess-r"));
    for (const s of streams) t.teardown(() => s.cancel());
    for (const s of streams) t.is((await s.it.next()).value?.credential?.generation, 1n);
    await c.clients[1]!.revokeSession(create(RevokeSessionRequestSchema, { sessionId: "sess-r" }));
    for (const s of streams) {
      const end = grpcFailure(await t.throwsAsync(s.it.next()));
      t.deepEqual(end, { code: status.NOT_FOUND, reason: "SESSION_NOT_FOUND", fields: [] });
    }
  },
);

test.serial(
  "a refresh token revoked at the IdP ends the streams with FAILED_PRECONDITION / REFRESH_FAILED",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 1, fast);
    const minted = await c.store("sess-dead", 8);
    const s = watchSession(c.clients[0]!, "sess-dead");
    t.teardown(() => s.cancel());
    t.is((await s.it.next()).value?.credential?.generation, 1n);
    await c.idp.revoke(minted.refreshToken);
    const end = grpcFailure(await t.throwsAsync(s.it.next()));
    t.deepEqual(end, { code: status.FAILED_PRECONDITION, reason: "REFRESH_FAILED", fields: [] });
  },
);

test.serial(
  "SIGTERM ends streams with UNAVAILABLE; reconnecting to the other replica continues at the same generation",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2);
    await c.store("sess-move", 300);
    const s = watchSession(c.clients[0]!, "sess-move");
    t.teardown(() => s.cancel());
    const first = await s.it.next();
    c.replicas[0]!.kill("SIGTERM");
    const end = grpcFailure(await t.throwsAsync(s.it.next()));
    t.is(end.code, status.UNAVAILABLE);
    t.is(end.reason, "SHUTTING_DOWN");
    const again = watchSession(c.clients[1]!, "sess-move");
    t.teardown(() => again.cancel());
    const resumed = await again.it.next();
    t.is(resumed.value?.credential?.generation, first.value?.credential?.generation);
    t.is(resumed.value?.credential?.accessToken, first.value?.credential?.accessToken);
    t.is(await c.replicas[0]!.exited, 0);
  },
);

test.serial(
  "past maxStreams a replica answers RESOURCE_EXHAUSTED, and a freed slot is reusable",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 1, { extraYaml: ["maxStreams: 2"] });
    await c.store("sess-lim", 300);
    const a = watchSession(c.clients[0]!, "sess-lim");
    const b = watchSession(c.clients[0]!, "sess-lim");
    t.teardown(() => a.cancel());
    t.teardown(() => b.cancel());
    await a.it.next();
    await b.it.next();
    const third = watchSession(c.clients[0]!, "sess-lim");
    const err = grpcFailure(await t.throwsAsync(third.it.next()));
    t.deepEqual(err, { code: status.RESOURCE_EXHAUSTED, reason: "RESOURCE_EXHAUSTED", fields: [] });
    a.cancel();
    await sleep(200);
    const fourth = watchSession(c.clients[0]!, "sess-lim");
    t.teardown(() => fourth.cancel());
    t.is((await fourth.it.next()).value?.credential?.generation, 1n);
  },
);
