// Per-caller limits through the wire, on the gRPC listener (grpc-js, spoken to over gRPC) and
// on the HTTP listener (Connect): requests per second per caller and RPC, concurrent
// WatchToken streams per caller, new sessions per caller. Beyond one: RESOURCE_EXHAUSTED with
// ErrorInfo (RATE_LIMITED, TOO_MANY_STREAMS, TOO_MANY_SESSIONS) and RetryInfo, and the server
// keeps serving. Without authentication the caller is the peer's address; with it, the
// authenticated identity, so two callers on one address have a budget each.

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import test from "ava";
import { ErrorInfoSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  GetValidTokensRequestSchema,
  StoreUpstreamTokensRequestSchema,
  TokenService,
  WatchTokenRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { startAuthStack } from "./support/auth-stack.ts";
import { type Stack, startStack } from "./support/stack.ts";

const listeners = {
  grpc: (s: Stack, headers?: Record<string, string>) =>
    createClient(
      TokenService,
      createGrpcTransport({
        baseUrl: `http://${s.grpcAddress}`,
        ...(headers ? { interceptors: [withHeaders(headers)] } : {}),
      }),
    ),
  connect: (s: Stack, headers?: Record<string, string>) =>
    createClient(
      TokenService,
      createConnectTransport({
        baseUrl: s.httpUrl,
        httpVersion: "1.1",
        ...(headers ? { interceptors: [withHeaders(headers)] } : {}),
      }),
    ),
};

function withHeaders(headers: Record<string, string>): Interceptor {
  return (next) => async (req) => {
    for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
    return next(req);
  };
}

type Client = ReturnType<(typeof listeners)["grpc"]>;

/** The refusal's code, ErrorInfo reason and metadata, and RetryInfo's delay in ms. */
function refusal(err: unknown) {
  const e = ConnectError.from(err);
  const info = e.findDetails(ErrorInfoSchema)[0];
  const retry = e.findDetails(RetryInfoSchema)[0]?.retryDelay;
  return {
    code: e.code,
    reason: info?.reason,
    metadata: { ...info?.metadata },
    retryMs:
      retry === undefined ? undefined : Number(retry.seconds) * 1000 + retry.nanos / 1_000_000,
    message: e.rawMessage,
  };
}

const getValid = (c: Client, sessionId: string) =>
  c.getValidTokens(create(GetValidTokensRequestSchema, { sessionId, provider: "idp" }));
const storeTokens = (c: Client, sessionId: string, refreshToken: string) =>
  c.storeUpstreamTokens(
    create(StoreUpstreamTokensRequestSchema, {
      sessionId,
      provider: "idp",
      accessToken: "at-not-a-jwt",
      refreshToken,
      expiry: { case: "expiresIn", value: 300n },
      tokenType: "Bearer",
    }),
  );

/** Calls until one is refused by a limit (at most `n`); the outcomes before it, and the refusal. */
async function untilRefused(n: number, call: () => Promise<unknown>) {
  const before: (Code | "ok")[] = [];
  for (let i = 0; i < n; i++) {
    const err = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    if (err !== undefined && ConnectError.from(err).code === Code.ResourceExhausted) {
      return { before, refused: refusal(err) };
    }
    before.push(err === undefined ? "ok" : ConnectError.from(err).code);
  }
  return { before, refused: undefined };
}

for (const [name, clientOf] of Object.entries(listeners)) {
  test(`${name}: calls of one RPC beyond limits.callers.rpcs are RESOURCE_EXHAUSTED (RATE_LIMITED) with RetryInfo; other RPCs keep their budget`, async (t) => {
    const s = await startStack({
      config: { limits: { callers: { requestsPerSecond: 50, rpcs: { GetValidTokens: 3 } } } },
    });
    t.teardown(s.stop);
    const c = clientOf(s);
    const { before, refused } = await untilRefused(20, () => getValid(c, "nobody"));
    // Three in the first second (a window may turn over under load: then a few more).
    t.true(before.length >= 3 && before.length < 20, `${before.length} calls before a refusal`);
    t.true(before.every((code) => code === Code.NotFound));
    t.is(refused?.code, Code.ResourceExhausted);
    t.is(refused?.reason, "RATE_LIMITED");
    t.deepEqual(refused?.metadata, { limit: "rate", rpc: "GetValidTokens" });
    t.true((refused?.retryMs ?? 0) > 0 && (refused?.retryMs ?? 0) <= 1_000);
    t.regex(refused?.message ?? "", /too many GetValidTokens calls from this caller per second/);
    // Another RPC has its own budget; after the wait, GetValidTokens is served again.
    await storeTokens(c, "limited", "rt-limited");
    await new Promise((r) => setTimeout(r, (refused?.retryMs ?? 1_000) + 20));
    t.is((await getValid(c, "limited")).credential?.generation, 1n);
  });

  test(`${name}: WatchToken streams beyond limits.callers.maxStreams are RESOURCE_EXHAUSTED (TOO_MANY_STREAMS); a closed one frees its place`, async (t) => {
    const s = await startStack({ config: { limits: { callers: { maxStreams: 2 } } } });
    t.teardown(s.stop);
    await s.store("watched", await s.mint(), 300);
    const c = clientOf(s);
    const open = () => {
      const ac = new AbortController();
      const it = c
        .watchToken(
          create(WatchTokenRequestSchema, {
            target: { case: "session", value: { sessionId: "watched", provider: "idp" } },
          }),
          { signal: ac.signal },
        )
        [Symbol.asyncIterator]();
      return { ac, first: it.next() };
    };
    const a = open();
    const b = open();
    t.is((await a.first).value?.credential?.generation, 1n);
    t.is((await b.first).value?.credential?.generation, 1n);
    const third = open();
    const err = await t.throwsAsync(third.first);
    const r = refusal(err);
    t.is(r.code, Code.ResourceExhausted);
    t.is(r.reason, "TOO_MANY_STREAMS");
    t.true((r.retryMs ?? 0) > 0);
    a.ac.abort();
    await a.first;
    // The server sees the cancel a moment later.
    let fourth: Awaited<ReturnType<typeof open>["first"]> | undefined;
    for (let i = 0; i < 50 && fourth === undefined; i++) {
      await new Promise((r) => setTimeout(r, 20));
      fourth = await open().first.catch(() => undefined);
    }
    t.is(fourth?.value?.credential?.generation, 1n);
    b.ac.abort();
  });

  test(`${name}: a caller whose calls keep failing by its own mistake (unknown sessions) is refused RESOURCE_EXHAUSTED (TOO_MANY_FAILURES) for the rest of the second`, async (t) => {
    const s = await startStack({
      config: { limits: { callers: { failuresPerSecond: 3, refusalHold: "0s" } } },
    });
    t.teardown(s.stop);
    const c = clientOf(s);
    const { before, refused } = await untilRefused(20, () => getValid(c, "guessed-id"));
    t.true(before.length >= 3 && before.length < 20, `${before.length} calls before a refusal`);
    t.true(before.every((code) => code === Code.NotFound));
    t.is(refused?.reason, "TOO_MANY_FAILURES");
    t.deepEqual(refused?.metadata, { limit: "failures", rpc: "GetValidTokens" });
    t.regex(refused?.message ?? "", /too many failed calls from this caller per second/);
    // Once the second is over the caller is served again.
    await new Promise((r) => setTimeout(r, (refused?.retryMs ?? 1_000) + 20));
    t.is(refusal(await t.throwsAsync(getValid(c, "guessed-id"))).code, Code.NotFound);
  });

  test(`${name}: new sessions beyond limits.callers.newSessionsPerSecond are RESOURCE_EXHAUSTED (TOO_MANY_SESSIONS); stored ones still renew`, async (t) => {
    const s = await startStack({ config: { limits: { callers: { newSessionsPerSecond: 2 } } } });
    t.teardown(s.stop);
    const c = clientOf(s);
    await storeTokens(c, "new-1", "rt-1");
    await storeTokens(c, "new-2", "rt-2");
    const r = refusal(await t.throwsAsync(storeTokens(c, "new-3", "rt-3")));
    t.is(r.code, Code.ResourceExhausted);
    t.is(r.reason, "TOO_MANY_SESSIONS");
    t.deepEqual(r.metadata, { limit: "sessions", rpc: "StoreUpstreamTokens" });
    t.is(
      (await storeTokens(c, "new-1", "rt-1b")).generation,
      2n,
      "an existing session is no new one",
    );
    t.is((await getValid(c, "new-2")).credential?.generation, 1n);
    t.is(refusal(await t.throwsAsync(getValid(c, "new-3"))).code, Code.NotFound, "never stored");
  });
}

test("with authentication, the caller is the identity: two callers on one address have a budget each", async (t) => {
  const s = await startAuthStack({
    config: { limits: { callers: { requestsPerSecond: 50, rpcs: { GetValidTokens: 2 } } } },
  });
  t.teardown(s.stop);
  const alice = listeners.grpc(s, { authorization: await s.bearer("apps", "alice") });
  const bob = listeners.grpc(s, { authorization: await s.bearer("apps", "bob") });
  const a = await untilRefused(10, () => getValid(alice, "nobody"));
  t.is(a.refused?.reason, "RATE_LIMITED");
  const b = await untilRefused(2, () => getValid(bob, "nobody"));
  t.is(b.refused, undefined, "bob's calls are his own");
  t.is(b.before.length, 2);
});

test("a caller over its rate is refused before its body is read: an undecodable body gets RESOURCE_EXHAUSTED, not INVALID_ARGUMENT", async (t) => {
  const s = await startStack({
    config: { limits: { callers: { requestsPerSecond: 50, rpcs: { GetValidTokens: 1 } } } },
  });
  t.teardown(s.stop);
  const post = async () => {
    const res = await fetch(`${s.httpUrl}/tokenvend.v1.TokenService/GetValidTokens`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: new Uint8Array([0xff, 0xff, 0xff, 0xff]),
    });
    return ((await res.json()) as { code?: string }).code;
  };
  t.is(await post(), "invalid_argument", "within the rate, the body is decoded (and refused)");
  t.is(await post(), "resource_exhausted", "over it, the body is never decoded");
});
