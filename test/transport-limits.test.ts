// The listeners' connection limits, proved with real clients and raw sockets: a slow or idle
// client is cut off (HTTP/1.1 headers and body timeouts, the HTTP/2 body deadline, first bytes),
// connections and streams are capped, a dead gRPC client is found by keepalive and its stream
// ends, old and idle gRPC connections are sent away, and Health.Watch is capped. The limits are
// small here so that each takes a second or two; what they default to is config-defaults.ts's.

import http2 from "node:http2";
import net from "node:net";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import test from "ava";
import { protoPath as healthProtoPath } from "grpc-health-check";
import {
  TokenService,
  type WatchTokenRequest,
  type WatchTokenResponse,
  WatchTokenResponseSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import {
  createGrpcServer,
  createHealthListener,
  createHttpServer,
  type GrpcConnectionLimits,
  type HttpConnectionLimits,
  pushStream,
  type StreamSink,
} from "../src/transport/index.ts";

/** Streams the handler saw end, by grant: the slot a dead client held is free. */
const ended = new Map<string, PromiseWithResolvers<unknown>>();
const endedOf = (grant: string) => {
  let w = ended.get(grant);
  if (w === undefined) {
    w = Promise.withResolvers<unknown>();
    ended.set(grant, w);
  }
  return w;
};

const impl: Partial<ServiceImpl<typeof TokenService>> = {
  async getToken() {
    return { credential: { accessToken: "at-ok", tokenType: "Bearer" } };
  },
  watchToken: pushStream(
    (req: WatchTokenRequest, ctx: HandlerContext, sink: StreamSink<WatchTokenResponse>) => {
      const grant = req.target.case === "grant" ? req.target.value : "";
      sink.send(create(WatchTokenResponseSchema, { credential: { accessToken: `at-${grant}` } }));
      ctx.signal.addEventListener("abort", () => endedOf(grant).resolve(ctx.signal.reason), {
        once: true,
      });
    },
  ),
};
const services = [{ desc: TokenService, impl }];

const httpLimits: HttpConnectionLimits = {
  headersTimeoutMs: 1_500,
  requestTimeoutMs: 2_500,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 40,
  maxConcurrentStreams: 5,
  maxSessionMemoryMB: 10,
  idleTimeoutMs: 60_000,
};

async function httpListener(limits: HttpConnectionLimits = httpLimits) {
  const server = createHttpServer({ services, readMaxBytes: 64 * 1024, limits });
  const { port } = await server.listen("127.0.0.1:0");
  return { server, port };
}

/** A raw TCP connection: what it got back, and when it closed (ms after opening). */
function rawConnection(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  const openedAt = performance.now();
  let received = "";
  socket.on("data", (d: Buffer) => {
    received += d.toString("latin1");
  });
  socket.on("error", () => {});
  const closed = new Promise<number>((resolve) =>
    socket.once("close", () => resolve(performance.now() - openedAt)),
  );
  return { socket, closed, received: () => received };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("HTTP/1.1: a client sending one header line a second gets 408 at the headers timeout, and others are served meanwhile", async (t) => {
  const { server, port } = await httpListener();
  t.teardown(() => server.close(0));
  const slow = rawConnection(port);
  let sent = 0;
  // It would take 20 s to finish its headers.
  const dribble = (async () => {
    slow.socket.write("POST /tokenvend.v1.TokenService/GetToken HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (; sent < 20 && !slow.socket.destroyed; sent++) {
      await sleep(1_000);
      if (!slow.socket.destroyed) slow.socket.write(`x-slow-${sent}: 1\r\n`);
    }
  })();
  const served = await fetch(`http://127.0.0.1:${port}/tokenvend.v1.TokenService/GetToken`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  t.is(served.status, 200, "a well-behaved request on another connection is served");
  const closedAfter = await slow.closed;
  await dribble;
  t.regex(slow.received(), /^HTTP\/1\.1 408 /, "Node's request timeout answer");
  t.true(closedAfter >= 1_400, `not before the headers timeout (${closedAfter} ms)`);
  t.true(closedAfter < 4_000, `closed within the timeout and one check (${closedAfter} ms)`);
  t.true(sent < 5, "long before the client was done");
});

test("HTTP/1.1: a body that trickles in gets 408 at the request timeout", async (t) => {
  const { server, port } = await httpListener();
  t.teardown(() => server.close(0));
  const slow = rawConnection(port);
  slow.socket.write(
    "POST /tokenvend.v1.TokenService/GetToken HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
      "content-type: application/json\r\ncontent-length: 40\r\n\r\n{",
  );
  const timer = setInterval(() => slow.socket.write(" "), 500);
  t.teardown(() => clearInterval(timer));
  const closedAfter = await slow.closed;
  t.regex(slow.received(), /^HTTP\/1\.1 408 /);
  t.true(closedAfter >= 2_400 && closedAfter < 5_000, `at the request timeout (${closedAfter} ms)`);
});

test("HTTP/1.1: a server stream outlives the request timeout: the request arrived whole", async (t) => {
  const { server, port } = await httpListener();
  t.teardown(() => server.close(0));
  const client = createClient(
    TokenService,
    createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" }),
  );
  const abort = new AbortController();
  const got: string[] = [];
  const stream = (async () => {
    for await (const m of client.watchToken(
      { target: { case: "grant", value: "h1-long" } },
      { signal: abort.signal },
    )) {
      got.push(m.credential?.accessToken ?? "");
    }
  })().catch(() => {});
  await sleep(httpLimits.requestTimeoutMs + 1_500);
  t.deepEqual(got, ["at-h1-long"]);
  t.is(ended.get("h1-long"), undefined, "the stream is still open past the request timeout");
  abort.abort();
  await stream;
});

test("HTTP/2: a stream whose body never ends is reset at the request timeout; the session serves on", async (t) => {
  const { server, port } = await httpListener();
  t.teardown(() => server.close(0));
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.destroy());
  const stuck = session.request({
    ":method": "POST",
    ":path": "/tokenvend.v1.TokenService/GetToken",
    "content-type": "application/json",
  });
  stuck.write("{"); // and never ends
  const openedAt = performance.now();
  const code = await new Promise<number>((resolve) => {
    stuck.on("error", () => {});
    stuck.once("close", () => resolve(stuck.rstCode ?? -1));
  });
  const after = performance.now() - openedAt;
  t.is(code, http2.constants.NGHTTP2_CANCEL);
  t.true(after >= 2_400 && after < 5_000, `at the request timeout (${after} ms)`);
  const ok = session.request({
    ":method": "POST",
    ":path": "/tokenvend.v1.TokenService/GetToken",
    "content-type": "application/json",
  });
  ok.end("{}");
  const status = await new Promise<number>((resolve) =>
    ok.once("response", (h) => resolve(Number(h[":status"]))),
  );
  t.is(status, 200);
  ok.resume();
});

test("HTTP/2: the listener advertises its stream limit per connection", async (t) => {
  const { server, port } = await httpListener();
  t.teardown(() => server.close(0));
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.destroy());
  const settings = await new Promise<http2.Settings>((resolve) =>
    session.once("remoteSettings", resolve),
  );
  t.is(settings.maxConcurrentStreams, httpLimits.maxConcurrentStreams);
});

test("a connection that sends nothing is closed at the headers timeout; past maxConnections new ones are closed at once", async (t) => {
  const { server, port } = await httpListener({ ...httpLimits, maxConnections: 3 });
  t.teardown(() => server.close(0));
  const held = [rawConnection(port), rawConnection(port), rawConnection(port)];
  await Promise.all(held.map((c) => new Promise((resolve) => c.socket.once("connect", resolve))));
  await sleep(100); // the listener has counted them
  const extra = rawConnection(port);
  t.true((await extra.closed) < 1_000, "the fourth is closed at once");
  const idleClosed = await Promise.all(held.map((c) => c.closed));
  for (const ms of idleClosed) t.true(ms >= 1_400 && ms < 4_000, `idle closed at ${ms} ms`);
  // With the idle ones gone, a real client gets in.
  const res = await fetch(`http://127.0.0.1:${port}/tokenvend.v1.TokenService/GetToken`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  t.is(res.status, 200);
});

// ---------------------------------------------------------------------------
// The gRPC listener (grpc-js)

const grpcLimits: GrpcConnectionLimits = {
  maxConcurrentStreams: 7,
  keepaliveTimeMs: 500,
  keepaliveTimeoutMs: 500,
  maxConnectionIdleMs: 0,
  maxConnectionAgeMs: 0,
  maxConnectionAgeGraceMs: 1_000,
  maxSessionMemoryMB: 10,
};

async function grpcListener(limits: GrpcConnectionLimits, maxHealthWatches?: number) {
  const server = createGrpcServer({
    services,
    maxReceiveMessageBytes: 64 * 1024,
    limits,
    ...(maxHealthWatches !== undefined ? { maxHealthWatches } : {}),
  });
  const { port } = await server.listen("127.0.0.1:0");
  server.setServing(true);
  return { server, port };
}

/** A TCP proxy that can go silent both ways, as a dead client does (no FIN, no answers). */
async function blackholeProxy(targetPort: number) {
  const sockets = new Set<net.Socket>();
  let silent = false;
  const server = net.createServer((down) => {
    const up = net.connect(targetPort, "127.0.0.1");
    for (const s of [down, up]) {
      sockets.add(s);
      s.on("error", () => {});
      s.once("close", () => {
        sockets.delete(s);
        (s === down ? up : down).destroy();
      });
    }
    down.on("data", (d: Buffer) => silent || up.write(d));
    up.on("data", (d: Buffer) => silent || down.write(d));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    goSilent: () => {
      silent = true;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

const watchPath = "/tokenvend.v1.TokenService/WatchToken";
const bytes = (b: Buffer) => b;
/** WatchTokenRequest{grant}: field 2, length-delimited. */
const watchRequest = (grant: string) =>
  Buffer.concat([Buffer.from([0x12, grant.length]), Buffer.from(grant)]);

test("gRPC: a client that stops answering is dropped by keepalive, and its stream's handler ends", async (t) => {
  const { server, port } = await grpcListener(grpcLimits);
  t.teardown(() => server.shutdown(0));
  const proxy = await blackholeProxy(port);
  t.teardown(() => proxy.close());
  const client = new grpc.Client(`127.0.0.1:${proxy.port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const call = client.makeServerStreamRequest(watchPath, bytes, bytes, watchRequest("dead"));
  call.on("error", () => {});
  await new Promise((resolve) => call.once("data", resolve));
  proxy.goSilent(); // the client's host is gone: no FIN, no ping answers
  const startedAt = performance.now();
  await endedOf("dead").promise;
  const after = performance.now() - startedAt;
  t.true(after < 3_000, `the slot is free within keepalive time + timeout (${after} ms)`);
});

test("gRPC: the listener advertises maxConcurrentStreams; a connection past its age gets GOAWAY and its streams end after the grace", async (t) => {
  const { server, port } = await grpcListener({
    ...grpcLimits,
    keepaliveTimeMs: 60_000,
    maxConnectionAgeMs: 800,
    maxConnectionAgeGraceMs: 600,
  });
  t.teardown(() => server.shutdown(0));
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.destroy());
  const settings = await new Promise<http2.Settings>((resolve) =>
    session.once("remoteSettings", resolve),
  );
  t.is(settings.maxConcurrentStreams, 7);
  const goaway = new Promise<number>((resolve) => session.once("goaway", () => resolve(1)));
  const stream = session.request({
    ":method": "POST",
    ":path": watchPath,
    "content-type": "application/grpc",
    te: "trailers",
  });
  const msg = watchRequest("aged");
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  stream.end(frame);
  stream.on("error", () => {});
  stream.resume();
  t.is(await goaway, 1, "GOAWAY at the connection's age");
  await endedOf("aged").promise;
  t.pass("the stream ended after the grace");
});

test("gRPC: a connection without calls past maxConnectionIdle gets GOAWAY", async (t) => {
  const { server, port } = await grpcListener({
    ...grpcLimits,
    keepaliveTimeMs: 60_000,
    maxConnectionIdleMs: 500,
  });
  t.teardown(() => server.shutdown(0));
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.destroy());
  const openedAt = performance.now();
  await new Promise((resolve) => session.once("goaway", resolve));
  const after = performance.now() - openedAt;
  t.true(after >= 400 && after < 3_000, `idle GOAWAY at ${after} ms`);
});

test("gRPC: past the session memory limit new streams are RESOURCE_EXHAUSTED and open ones keep working", async (t) => {
  const { server, port } = await grpcListener({
    ...grpcLimits,
    keepaliveTimeMs: 60_000,
    maxConcurrentStreams: 100_000,
    maxSessionMemoryMB: 1,
  });
  t.teardown(() => server.shutdown(0));
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const open: grpc.ClientReadableStream<Buffer>[] = [];
  let refused: grpc.ServiceError | undefined;
  for (let i = 0; i < 5_000 && refused === undefined; i++) {
    const call = client.makeServerStreamRequest(watchPath, bytes, bytes, watchRequest(`m${i}`));
    await new Promise<void>((resolve) => {
      call.once("data", () => {
        open.push(call);
        resolve();
      });
      call.once("error", (e: grpc.ServiceError) => {
        refused = e;
        resolve();
      });
    });
  }
  t.is(refused?.code, grpc.status.RESOURCE_EXHAUSTED);
  t.true(open.length > 100, `${open.length} streams fit in 1 MB`);
  // The open ones are still there: none ended on the server.
  t.is(ended.get("m0"), undefined);
  t.is(ended.get(`m${open.length - 1}`), undefined);
  for (const c of open) {
    c.on("error", () => {});
    c.cancel();
  }
});

const healthPackage = () =>
  grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath)) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };

test("health listener: a request over the configured message size is RESOURCE_EXHAUSTED, and Check serves on", async (t) => {
  const listener = createHealthListener([""], {
    connections: grpcLimits,
    maxWatches: 2,
    maxReceiveMessageBytes: 1024,
  });
  const { port } = await listener.listen("127.0.0.1:0");
  listener.setServing(true);
  t.teardown(() => listener.close());
  const health = new (healthPackage().grpc.health.v1.Health)(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  );
  t.teardown(() => health.close());
  const check = (service: string) =>
    new Promise<string>((resolve) =>
      (
        health.check as (
          r: object,
          cb: (e: grpc.ServiceError | null, r?: { status: string }) => void,
        ) => void
      )({ service }, (e, r) => resolve(e ? `error ${e.code}` : String(r?.status))),
    );
  t.is(await check("x".repeat(2_000)), `error ${grpc.status.RESOURCE_EXHAUSTED}`);
  t.is(await check(""), "1", "SERVING (1)");
});

test("gRPC: Health.Watch is capped per listener; a freed slot is taken again", async (t) => {
  const { server, port } = await grpcListener({ ...grpcLimits, keepaliveTimeMs: 60_000 }, 2);
  t.teardown(() => server.shutdown(0));
  const health = new (healthPackage().grpc.health.v1.Health)(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  );
  t.teardown(() => health.close());
  const watch = () => {
    const call = (health.watch as (r: object) => grpc.ClientReadableStream<unknown>)({
      service: "",
    });
    const first = new Promise<string>((resolve) => {
      call.once("data", () => resolve("ok"));
      call.once("error", (e: grpc.ServiceError) => resolve(`error ${e.code}`));
    });
    return { call, first };
  };
  const a = watch();
  const b = watch();
  t.is(await a.first, "ok");
  t.is(await b.first, "ok");
  const c = watch();
  t.is(await c.first, `error ${grpc.status.RESOURCE_EXHAUSTED}`);
  a.call.on("error", () => {});
  a.call.cancel();
  await sleep(100);
  const d = watch();
  t.is(await d.first, "ok");
  for (const w of [b, d]) {
    w.call.on("error", () => {});
    w.call.cancel();
  }
});
