// OpenTelemetry end to end: the real server and the real oidc-provider, with
// in-memory span and metric exporters in this process. One trace runs from the
// caller through the server span and the refresh to the token-endpoint call
// (whose traceparent the IdP receives); waiters link to the shared refresh;
// background renewals are traces of their own, linked from the pushes they
// cause; failures are errors on the refresh span and counted by outcome; and
// nothing the run produced (span, event, link, log line, metric label,
// Prometheus scrape) holds a token.

import "./support/otel.ts";
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import test from "ava";
import {
  GetTokenRequestSchema,
  RenewalReason,
  TokenService,
  WatchTokenRequestSchema,
  WatchTokenResponseSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { parseConfig } from "../src/config.ts";
import { sessionKey, type TokenKey } from "../src/core/token.ts";
import type { TokenVendor } from "../src/core/token-vendor.ts";
import { startLocalIdp } from "../src/dev/local-idp.ts";
import { createLogger } from "../src/log.ts";
import { startServer } from "../src/server.ts";
import { createMongoStore } from "../src/store/mongo-store.ts";
import { generateKey, parseKeyring } from "../src/store/sealing.ts";
import { startDelayProxy } from "./support/delay-proxy.ts";
import { createGrpcJsClient } from "./support/grpc-client.ts";
import { mongoForTests } from "./support/mongo.ts";
import {
  countOf,
  createTestMeter,
  finishedSpans,
  type ReadableSpan,
  type ResourceMetrics,
  spanExporter,
  sumOf,
  tracerProvider,
} from "./support/otel.ts";
import { getValid, grpcFailure, type Stack, startStack } from "./support/stack.ts";

// --- what the whole run produced, scanned for token material by the last test ---
const secrets = new Set<string>();
const allSpans: ReadableSpan[] = [];
const allMetrics: ResourceMetrics[] = [];
const logLines: string[] = [];
const scrapes: string[] = [];

const keep = (...values: (string | undefined)[]) => {
  for (const v of values) if (v !== undefined && v.length >= 8) secrets.add(v);
};

/** A logger at debug level that keeps every line. */
const logger = createLogger(
  "debug",
  new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line !== "") logLines.push(line);
      done();
    },
  }),
);

/** A stack with telemetry on: this process's tracer, a fresh meter, the capturing logger. */
async function telemetryStack(opts: Parameters<typeof startStack>[0] = {}) {
  const meter = createTestMeter();
  const s = await startStack({
    ...opts,
    server: { telemetry: { tracerProvider, meterProvider: meter.meterProvider }, logger },
  });
  for (const c of s.idp.clients) keep(c.clientSecret);
  return { s, meter };
}

/** Remembers every token the stack's store holds for these keys (rotated refresh tokens too). */
async function keepStored(s: Stack, keys: TokenKey[]) {
  for (const k of keys) {
    const r = await s.server.store.getActive(k);
    if (r?.tokens !== undefined)
      keep(r.tokens.accessToken, r.tokens.refreshToken, r.tokens.idToken);
  }
}

const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const traceparent = (traceId: string, spanId: string) => `00-${traceId}-${spanId}-01`;

function named(spans: ReadableSpan[], name: string): ReadableSpan[] {
  return spans.filter((s) => s.name === name);
}

function one(spans: ReadableSpan[], name: string): ReadableSpan {
  const found = named(spans, name);
  if (found.length !== 1) throw new Error(`expected one span "${name}", got ${found.length}`);
  return found[0]!;
}

const tokenRequests = (spans: ReadableSpan[]) =>
  spans.filter(
    (s) =>
      s.instrumentationScope.name.includes("undici") &&
      s.attributes["url.path"] === "/token" &&
      s.attributes["http.request.method"] === "POST",
  );

/** Counts the streams the vendor opened (one per WatchToken call, whichever listener). */
function countWatches(vendor: TokenVendor) {
  const n = { watch: 0 };
  const { watch } = vendor;
  Object.assign(vendor, {
    watch(...args: Parameters<typeof watch>) {
      n.watch++;
      return watch.apply(vendor, args);
    },
  } satisfies Pick<TokenVendor, "watch">);
  return n;
}

async function until(what: string, ok: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test.beforeEach(() => {
  allSpans.push(...spanExporter.getFinishedSpans());
  spanExporter.reset();
});

test.serial(
  "GetValidTokens on an expired token: server span > refresh span > token-endpoint call, and the IdP got that trace's traceparent",
  async (t) => {
    const { s, meter } = await telemetryStack();
    t.teardown(s.stop);
    const minted = await s.mint();
    keep(minted.accessToken, minted.refreshToken, minted.idToken);
    await s.store("sess-trace", minted, 2); // past its 5 s clock skew: the read refreshes
    spanExporter.reset();

    const traceId = hex(16);
    const callerSpanId = hex(8);
    const res = await s.client.getValidTokens(getValid("sess-trace"), {
      metadata: { traceparent: traceparent(traceId, callerSpanId) },
    });
    keep(res.credential?.accessToken, res.credential?.idToken);
    await keepStored(s, [sessionKey("sess-trace", "idp")]);
    t.not(res.credential?.accessToken, minted.accessToken);

    const spans = finishedSpans(traceId);
    const server = one(spans, "tokenvend.v1.TokenService/GetValidTokens");
    t.is(server.kind, SpanKind.SERVER);
    t.is(server.parentSpanContext?.spanId, callerSpanId);
    t.true(server.parentSpanContext?.isRemote);
    t.like(server.attributes, {
      "rpc.system.name": "grpc",
      "rpc.method": "tokenvend.v1.TokenService/GetValidTokens",
      "rpc.status_code": "OK",
      "rpc.grpc.status_code": 0,
    });

    const refresh = one(spans, "tokenvend.refresh");
    t.is(refresh.parentSpanContext?.spanId, server.spanContext().spanId);
    t.deepEqual(refresh.attributes, {
      "tokenvend.provider": "idp",
      "tokenvend.grant_type": "refresh_token",
      "tokenvend.refresh.attempt": 1,
      "tokenvend.refresh.trigger": "caller",
      "tokenvend.refresh.outcome": "success",
      "tokenvend.refresh.source": "provider",
      "tokenvend.token.generation": 2,
    });
    t.is(refresh.status.code, SpanStatusCode.UNSET);
    // The caller's span links to the refresh it waited for (its own: not shared).
    t.deepEqual(
      server.links.map((l) => [l.context.spanId, l.attributes?.["tokenvend.refresh.shared"]]),
      [[refresh.spanContext().spanId, false]],
    );

    const http = tokenRequests(spans);
    t.is(http.length, 1);
    t.is(http[0]!.kind, SpanKind.CLIENT);
    t.is(http[0]!.parentSpanContext?.spanId, refresh.spanContext().spanId);
    // The real oidc-provider received the client span's traceparent.
    t.is(
      s.idp.counters.lastTokenRequestHeaders?.traceparent,
      traceparent(traceId, http[0]!.spanContext().spanId),
    );

    allMetrics.push(await meter.collect());
  },
);

test.serial(
  "an unknown session is NOT_FOUND, not an error, with the same span on every listener and protocol",
  async (t) => {
    const { s, meter } = await telemetryStack();
    t.teardown(s.stop);
    const calls: [string, string, (tp: string) => Promise<unknown>][] = [
      [
        "grpc-js listener",
        "grpc",
        (tp) => s.client.getValidTokens(getValid("nobody"), { metadata: { traceparent: tp } }),
      ],
      [
        "HTTP listener, gRPC",
        "grpc",
        (tp) =>
          createClient(TokenService, createGrpcTransport({ baseUrl: s.httpUrl })).getValidTokens(
            getValid("nobody"),
            { headers: { traceparent: tp } },
          ),
      ],
      [
        "HTTP listener, Connect",
        "connectrpc",
        (tp) =>
          createClient(
            TokenService,
            createConnectTransport({ baseUrl: s.httpUrl, httpVersion: "1.1" }),
          ).getValidTokens(getValid("nobody"), { headers: { traceparent: tp } }),
      ],
    ];
    for (const [listener, system, call] of calls) {
      const traceId = hex(16);
      const parent = hex(8);
      await t.throwsAsync(call(traceparent(traceId, parent)));
      await until(`${listener} span`, () => finishedSpans(traceId).length > 0);
      const spans = finishedSpans(traceId);
      t.is(spans.length, 1, listener);
      const span = spans[0]!;
      t.is(span.name, "tokenvend.v1.TokenService/GetValidTokens", listener);
      t.is(span.kind, SpanKind.SERVER, listener);
      t.is(span.parentSpanContext?.spanId, parent, listener);
      t.is(span.status.code, SpanStatusCode.UNSET, listener);
      t.deepEqual(
        span.attributes,
        {
          "rpc.system.name": system,
          "rpc.method": "tokenvend.v1.TokenService/GetValidTokens",
          "rpc.status_code": "NOT_FOUND",
          "rpc.grpc.status_code": 5,
        },
        listener,
      );
      t.deepEqual(span.events, [], listener);
    }
    const m = await meter.collect();
    allMetrics.push(m);
    t.is(
      countOf(m, "rpc.server.call.duration", {
        "rpc.method": "tokenvend.v1.TokenService/GetValidTokens",
        "rpc.status_code": "NOT_FOUND",
      }),
      3,
    );
    // Expected outcomes carry no error.type.
    t.is(countOf(m, "rpc.server.call.duration", { "error.type": "NOT_FOUND" }), 0);
  },
);

test.serial(
  "50 concurrent callers share one refresh: one refresh span, every caller's span linked to it",
  async (t) => {
    const idp = await startLocalIdp();
    t.teardown(() => idp.stop());
    const proxy = await startDelayProxy(idp.issuer);
    t.teardown(() => proxy.close());
    const { s, meter } = await telemetryStack({ idp, tokenEndpoint: `${proxy.url}/token` });
    t.teardown(s.stop);
    const minted = await s.mint();
    keep(minted.accessToken, minted.refreshToken, minted.idToken);
    await s.store("sess-herd", minted, 2);
    spanExporter.reset();
    proxy.delayMs = 300; // the refresh is in flight while all 50 calls arrive

    const traceIds = Array.from({ length: 50 }, () => hex(16));
    const results = await Promise.all(
      traceIds.map((id) =>
        s.client.getValidTokens(getValid("sess-herd"), {
          metadata: { traceparent: traceparent(id, hex(8)) },
        }),
      ),
    );
    for (const r of results) keep(r.credential?.accessToken);
    await keepStored(s, [sessionKey("sess-herd", "idp")]);
    t.is(new Set(results.map((r) => r.credential?.accessToken)).size, 1);

    const spans = finishedSpans();
    const refresh = one(spans, "tokenvend.refresh");
    const refreshId = refresh.spanContext().spanId;
    t.is(tokenRequests(spans).length, 1);
    const servers = named(spans, "tokenvend.v1.TokenService/GetValidTokens");
    t.is(servers.length, 50);
    const starter = servers.filter(
      (sp) => sp.spanContext().spanId === refresh.parentSpanContext?.spanId,
    );
    t.is(starter.length, 1, "one caller started the refresh: its span is the parent");
    for (const sp of servers) {
      t.deepEqual(
        sp.links.map((l) => l.context.spanId),
        [refreshId],
        "every caller's span links to the one refresh",
      );
    }
    t.is(
      servers.filter((sp) => sp.links[0]?.attributes?.["tokenvend.refresh.shared"] === true).length,
      49,
    );
    const m = await meter.collect();
    allMetrics.push(m);
    t.is(sumOf(m, "tokenvend.refreshes"), 1);
  },
);

test.serial(
  "a stream on the gRPC listener keeps the push form: the background renewal is a trace of its own, linked from the push it caused; no orphan spans",
  async (t) => {
    const { s, meter } = await telemetryStack({ lifetime: { freshness: 0.1, clockSkew: "1s" } });
    t.teardown(s.stop);
    const minted = await s.mint();
    keep(minted.accessToken, minted.refreshToken, minted.idToken);
    await s.store("sess-watch", minted, 10);
    spanExporter.reset();
    const forms = countWatches(s.server.vendor);

    const traceId = hex(16);
    const callerSpanId = hex(8);
    const g = createGrpcJsClient(TokenService, s.grpcAddress);
    t.teardown(() => g.close());
    const stream = g.stream(
      "WatchToken",
      WatchTokenRequestSchema,
      WatchTokenResponseSchema,
      create(WatchTokenRequestSchema, {
        target: { case: "session", value: { sessionId: "sess-watch", provider: "idp" } },
      }),
      { metadata: { traceparent: traceparent(traceId, callerSpanId) } },
    );
    const it = stream.messages[Symbol.asyncIterator]();
    const first = await it.next();
    t.is(first.value?.reason, RenewalReason.INITIAL);
    t.deepEqual(forms, { watch: 1 }, "one stream opened, with telemetry on");
    const second = await it.next();
    t.is(second.value?.reason, RenewalReason.REFRESHED);
    keep(first.value?.credential?.accessToken, second.value?.credential?.accessToken);
    await keepStored(s, [sessionKey("sess-watch", "idp")]);
    const m1 = await meter.collect();
    t.is(sumOf(m1, "tokenvend.streams.active"), 1);
    t.is(sumOf(m1, "tokenvend.watchers.active"), 1);
    stream.cancel();
    await t.throwsAsync(it.next());
    await until("the stream's server span", () =>
      finishedSpans(traceId).some((sp) => sp.name === "tokenvend.v1.TokenService/WatchToken"),
    );

    const spans = finishedSpans();
    const server = one(finishedSpans(traceId), "tokenvend.v1.TokenService/WatchToken");
    t.is(server.parentSpanContext?.spanId, callerSpanId);
    t.like(server.attributes, { "rpc.status_code": "CANCELLED" });
    t.is(server.status.code, SpanStatusCode.UNSET);

    const refresh = one(spans, "tokenvend.refresh");
    t.not(refresh.spanContext().traceId, traceId, "the renewal is a trace of its own");
    t.is(refresh.parentSpanContext, undefined);
    t.like(refresh.attributes, {
      "tokenvend.refresh.trigger": "background",
      "tokenvend.refresh.outcome": "success",
      "tokenvend.token.generation": 2,
    });
    const http = tokenRequests(spans);
    t.is(http.length, 1);
    t.is(http[0]!.parentSpanContext?.spanId, refresh.spanContext().spanId);

    const push = one(spans, "tokenvend.push");
    t.is(push.spanContext().traceId, traceId, "the push is in the stream's trace");
    t.is(push.parentSpanContext?.spanId, server.spanContext().spanId);
    t.deepEqual(
      push.links.map((l) => l.context.spanId),
      [refresh.spanContext().spanId],
    );
    t.like(push.attributes, {
      "tokenvend.token.generation": 2,
      "tokenvend.watch.reason": "refreshed",
    });

    // Every span either has its parent among the exported ones (or the caller's,
    // remote), or is a root that should be one: a server span or a background renewal.
    const ids = new Set(spans.map((sp) => sp.spanContext().spanId));
    for (const sp of spans) {
      const p = sp.parentSpanContext;
      if (p === undefined) {
        t.true(
          sp.kind === SpanKind.SERVER ||
            sp.attributes["tokenvend.refresh.trigger"] === "background",
          `unexpected root span ${sp.name}`,
        );
      } else {
        t.true(p.isRemote === true || ids.has(p.spanId), `orphan span ${sp.name}`);
      }
    }

    await until("no stream left", () => s.server.vendor.stats().streams === 0);
    const m2 = await meter.collect();
    allMetrics.push(m2);
    t.is(sumOf(m2, "tokenvend.streams.active"), 0);
    t.is(sumOf(m2, "tokenvend.watchers.active"), 0);
    t.is(countOf(m2, "rpc.server.call.duration", { "rpc.status_code": "CANCELLED" }), 1);

    // The HTTP listener keeps the generator form under the interceptor: same span.
    const httpTraceId = hex(16);
    const abort = new AbortController();
    const httpStream = createClient(
      TokenService,
      createGrpcTransport({ baseUrl: s.httpUrl }),
    ).watchToken(
      { target: { case: "session", value: { sessionId: "sess-watch", provider: "idp" } } },
      { headers: { traceparent: traceparent(httpTraceId, hex(8)) }, signal: abort.signal },
    );
    const httpIt = httpStream[Symbol.asyncIterator]();
    t.is((await httpIt.next()).value?.reason, RenewalReason.INITIAL);
    t.deepEqual(forms, { watch: 2 }, "the HTTP listener's stream opened the second");
    abort.abort();
    await t.throwsAsync(httpIt.next());
    await until("the HTTP stream's server span", () => finishedSpans(httpTraceId).length > 0);
    const httpServer = one(finishedSpans(httpTraceId), "tokenvend.v1.TokenService/WatchToken");
    t.deepEqual(httpServer.attributes, server.attributes);
    t.deepEqual(httpServer.status, server.status);
  },
);

test.serial(
  "a failed refresh: error status and reason on the refresh span, counted by outcome, and its log line carries the trace",
  async (t) => {
    const { s, meter } = await telemetryStack();
    t.teardown(s.stop);
    const revoked = await s.mint();
    keep(revoked.accessToken, revoked.refreshToken, revoked.idToken);
    await s.idp.revoke(revoked.refreshToken);
    await s.store("sess-revoked", revoked, 2);
    spanExporter.reset();
    const logsBefore = logLines.length;

    const traceId = hex(16);
    const err = await t.throwsAsync(
      s.client.getValidTokens(getValid("sess-revoked"), {
        metadata: { traceparent: traceparent(traceId, hex(8)) },
      }),
    );
    t.deepEqual(grpcFailure(err), { code: 9, reason: "REFRESH_FAILED", fields: [] });

    const spans = finishedSpans(traceId);
    const server = one(spans, "tokenvend.v1.TokenService/GetValidTokens");
    t.is(server.status.code, SpanStatusCode.UNSET, "FAILED_PRECONDITION is an answer, not a fault");
    t.like(server.attributes, { "rpc.status_code": "FAILED_PRECONDITION" });
    const refresh = one(spans, "tokenvend.refresh");
    t.is(refresh.status.code, SpanStatusCode.ERROR);
    t.is(refresh.status.message, 'provider "idp" rejected the refresh (invalid_grant)');
    t.like(refresh.attributes, {
      "tokenvend.refresh.outcome": "rejected",
      "tokenvend.oauth.error": "invalid_grant",
      "error.type": "REFRESH_FAILED",
    });
    t.deepEqual(
      refresh.events.map((e) => [e.name, e.attributes]),
      [
        [
          "exception",
          {
            "exception.type": "REFRESH_FAILED",
            "exception.message": 'provider "idp" rejected the refresh (invalid_grant)',
          },
        ],
      ],
    );

    const line = logLines
      .slice(logsBefore)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "refresh rejected");
    t.like(line, {
      trace_id: traceId,
      span_id: refresh.spanContext().spanId,
      provider: "idp",
      oauthError: "invalid_grant",
    });

    const m = await meter.collect();
    allMetrics.push(m);
    t.is(
      sumOf(m, "tokenvend.refreshes", {
        "tokenvend.provider": "idp",
        "tokenvend.refresh.outcome": "rejected",
      }),
      1,
    );
    t.is(countOf(m, "tokenvend.refresh.duration", { "tokenvend.refresh.outcome": "rejected" }), 1);
    t.is(sumOf(m, "tokenvend.refreshes", { "tokenvend.refresh.outcome": "success" }), 0);
  },
);

test.serial("metric values after a scripted sequence of calls", async (t) => {
  const { s, meter } = await telemetryStack();
  t.teardown(s.stop);
  const a = await s.mint();
  const b = await s.mint("bob");
  keep(a.accessToken, a.refreshToken, a.idToken, b.accessToken, b.refreshToken, b.idToken);
  await s.store("sess-a", a, 300);
  for (let i = 0; i < 3; i++) await s.client.getValidTokens(getValid("sess-a")); // 3 hits
  await t.throwsAsync(s.client.getValidTokens(getValid("nobody"))); // a miss, NOT_FOUND
  await s.store("sess-b", b, 2);
  await s.client.getValidTokens(getValid("sess-b")); // a miss and a refresh
  const g1 = await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" })); // miss + grant
  const g2 = await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" })); // hit
  keep(g1.credential?.accessToken, g2.credential?.accessToken);
  const connect = createClient(
    TokenService,
    createConnectTransport({ baseUrl: s.httpUrl, httpVersion: "1.1" }),
  );
  await connect.getValidTokens(getValid("sess-a")); // a hit, over Connect
  await keepStored(s, [sessionKey("sess-a", "idp"), sessionKey("sess-b", "idp")]);

  const m = await meter.collect();
  allMetrics.push(m);
  const rpc = (system: string, method: string, status: string) =>
    countOf(m, "rpc.server.call.duration", {
      "rpc.system.name": system,
      "rpc.method": `tokenvend.v1.TokenService/${method}`,
      "rpc.status_code": status,
    });
  t.deepEqual(
    {
      store: rpc("grpc", "StoreUpstreamTokens", "OK"),
      valid: rpc("grpc", "GetValidTokens", "OK"),
      notFound: rpc("grpc", "GetValidTokens", "NOT_FOUND"),
      token: rpc("grpc", "GetToken", "OK"),
      connect: rpc("connectrpc", "GetValidTokens", "OK"),
      all: countOf(m, "rpc.server.call.duration"),
    },
    { store: 2, valid: 4, notFound: 1, token: 2, connect: 1, all: 10 },
  );
  t.deepEqual(
    {
      hits: sumOf(m, "tokenvend.cache.lookups", { "tokenvend.cache.result": "hit" }),
      misses: sumOf(m, "tokenvend.cache.lookups", { "tokenvend.cache.result": "miss" }),
    },
    { hits: 5, misses: 3 },
  );
  const refreshes = (grantType: string) =>
    sumOf(m, "tokenvend.refreshes", {
      "tokenvend.provider": "idp",
      "tokenvend.grant_type": grantType,
      "tokenvend.refresh.outcome": "success",
      "tokenvend.refresh.source": "provider",
    });
  t.is(refreshes("refresh_token"), 1);
  t.is(refreshes("client_credentials"), 1);
  t.is(sumOf(m, "tokenvend.refreshes"), 2);
  t.is(countOf(m, "tokenvend.refresh.duration"), 2);
  t.is(sumOf(m, "tokenvend.claim.waits"), 0);
  t.is(sumOf(m, "tokenvend.claim.takeovers"), 0);
  t.is(sumOf(m, "tokenvend.streams.active"), 0);
});

test.serial(
  "MongoDB operations of a refresh are spans under it (the driver's instrumentation)",
  async (t) => {
    const mongo = await mongoForTests();
    t.teardown(mongo.stop);
    const store = createMongoStore({
      client: mongo.uri,
      dbName: `telemetry_${process.pid}_${Date.now()}`,
      keyring: parseKeyring(`primary:${generateKey()}`),
    });
    await store.ensureIndexes();
    const { s, meter } = await telemetryStack({ store });
    t.teardown(s.stop);
    const minted = await s.mint();
    keep(minted.accessToken, minted.refreshToken, minted.idToken);
    await s.store("sess-mongo", minted, 2);
    spanExporter.reset();
    const traceId = hex(16);
    const res = await s.client.getValidTokens(getValid("sess-mongo"), {
      metadata: { traceparent: traceparent(traceId, hex(8)) },
    });
    keep(res.credential?.accessToken);
    await keepStored(s, [sessionKey("sess-mongo", "idp")]);
    const spans = finishedSpans(traceId);
    const refresh = one(spans, "tokenvend.refresh");
    const db = spans.filter((sp) => sp.instrumentationScope.name.includes("mongodb"));
    t.true(db.length >= 3, `MongoDB spans in the trace: ${db.length}`);
    t.true(db.every((sp) => sp.kind === SpanKind.CLIENT));
    t.true(
      db.every((sp) => sp.parentSpanContext?.spanId === refresh.spanContext().spanId),
      "under the refresh span",
    );
    allMetrics.push(await meter.collect());
  },
);

test.serial("a Prometheus scrape endpoint on its own port when configured", async (t) => {
  const idp = await startLocalIdp();
  t.teardown(() => idp.stop());
  const client = idp.client("tokenvend");
  keep(client.clientSecret);
  const config = parseConfig(
    {
      grpc: { listen: "127.0.0.1:0" },
      http: { listen: "127.0.0.1:0" },
      metrics: { prometheusListen: "127.0.0.1:0" },
      logLevel: "silent",
      providers: { idp: { issuer: idp.issuer, clientId: client.clientId, clientSecretEnv: "S" } },
      grants: { demo: { provider: "idp", scopes: ["api:read"] } },
    },
    { env: { S: client.clientSecret }, readFile: () => "" },
  );
  const server = await startServer({ config, logger });
  t.teardown(() => server.shutdown());
  t.not(server.prometheusPort, undefined);
  const c = createClient(
    TokenService,
    createConnectTransport({ baseUrl: `http://127.0.0.1:${server.httpPort}`, httpVersion: "1.1" }),
  );
  const res = await c.getToken({ grant: "demo" });
  keep(res.credential?.accessToken);
  const scrape = await fetch(`http://127.0.0.1:${server.prometheusPort}/metrics`);
  t.is(scrape.status, 200);
  const text = await scrape.text();
  scrapes.push(text);
  t.regex(
    text,
    /rpc_server_call_duration_count\{[^}]*rpc_method="tokenvend\.v1\.TokenService\/GetToken"[^}]*rpc_status_code="OK"[^}]*\} 1/,
  );
  t.regex(
    text,
    /tokenvend_refreshes_total\{[^}]*tokenvend_grant_type="client_credentials"[^}]*tokenvend_refresh_outcome="success"[^}]*\} 1/,
  );
  t.regex(text, /tokenvend_cache_lookups_total\{[^}]*tokenvend_cache_result="miss"[^}]*\} 1/);
  t.is((await fetch(`http://127.0.0.1:${server.prometheusPort}/other`)).status, 404);
});

test.serial(
  "no token material in any span attribute, event, link, log line or metric label of the run",
  (t) => {
    allSpans.push(...spanExporter.getFinishedSpans());
    t.true(secrets.size >= 20, `tokens collected: ${secrets.size}`);
    t.true(allSpans.length >= 50, `spans produced: ${allSpans.length}`);
    t.true(logLines.length > 0);
    const texts: [string, string][] = [];
    for (const sp of allSpans) {
      texts.push([
        `span ${sp.name}`,
        JSON.stringify({
          name: sp.name,
          attributes: sp.attributes,
          status: sp.status,
          events: sp.events.map((e) => ({ name: e.name, attributes: e.attributes })),
          links: sp.links.map((l) => l.attributes),
          resource: sp.resource.attributes,
        }),
      ]);
    }
    for (const line of logLines) texts.push(["log line", line]);
    for (const rm of allMetrics) {
      for (const sm of rm.scopeMetrics) {
        for (const m of sm.metrics) {
          texts.push([
            `metric ${m.descriptor.name}`,
            JSON.stringify(m.dataPoints.map((p) => p.attributes)),
          ]);
        }
      }
    }
    for (const text of scrapes) texts.push(["Prometheus scrape", text]);
    const found: string[] = [];
    for (const [where, text] of texts) {
      for (const secret of secrets) if (text.includes(secret)) found.push(where);
    }
    t.deepEqual(found, []);
  },
);
