// Pins src/transport/library-internals.ts, the one file that reads the
// libraries' internals: each test fails when an update of @grpc/grpc-js,
// grpc-health-check, @grpc/proto-loader with @grpc/reflection, connect-es,
// connect-node or Node's http server changes the shape that file relies on.

import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createConnectRouter } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import test from "ava";
import { HealthImplementation } from "grpc-health-check";
import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import { createHttpServer } from "../src/transport/index.ts";
import {
  addHealthService,
  connectionOf,
  directStreamOf,
  trackRequestTimeouts,
  undecodableAsInvalidArgument,
} from "../src/transport/library-internals.ts";
import { reflectionPackage } from "../src/transport/reflection.ts";

const bytes = (b: Buffer) => b;

async function listen(server: grpc.Server): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
}

test("grpc-js: a call's HTTP/2 stream is found once its headers went out, and a frame written to it arrives as a message", async (t) => {
  const server = new grpc.Server();
  const seen: string[] = [];
  const definition = {
    Stream: {
      path: "/test.Push/Stream",
      requestStream: false,
      responseStream: true,
      requestSerialize: bytes,
      requestDeserialize: bytes,
      responseSerialize: bytes,
      responseDeserialize: bytes,
    },
  } satisfies grpc.ServiceDefinition;
  server.addService(definition, {
    Stream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      seen.push(`before headers: ${directStreamOf(call) === undefined ? "none" : "stream"}`);
      call.write(Buffer.from("a"), () => {
        const direct = directStreamOf(call);
        seen.push(`after headers: ${direct === undefined ? "none" : "stream"}`);
        direct?.write(Buffer.from([0, 0, 0, 0, 1, 0x62]), () => call.end());
      });
    },
  });
  const port = await listen(server);
  t.teardown(() => server.forceShutdown());
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const call = client.makeServerStreamRequest("/test.Push/Stream", bytes, bytes, Buffer.alloc(0));
  const got: string[] = [];
  for await (const b of call as AsyncIterable<Buffer>) got.push(b.toString());
  t.deepEqual(seen, ["before headers: none", "after headers: stream"]);
  // The frame written straight to the HTTP/2 stream reaches the client as a message.
  t.deepEqual(got, ["a", "b"]);
});

test("grpc-health-check: addToServer adds one service through addService alone, and its Watch handler is `watch`", async (t) => {
  const server = new grpc.Server();
  const added: string[] = [];
  const addService = server.addService.bind(server);
  server.addService = (definition, impl) => {
    added.push(
      Object.values(definition)
        .map((m) => m.path)
        .join(" "),
    );
    addService(definition, impl);
  };
  const watched: string[] = [];
  const health = new HealthImplementation({ "": "SERVING" });
  addHealthService(health, server, (call) => watched.push(call.getPath()) > 0);
  t.deepEqual(added, [
    "/grpc.health.v1.Health/Check /grpc.health.v1.Health/Watch /grpc.health.v1.Health/List",
  ]);
  const port = await listen(server);
  t.teardown(() => server.forceShutdown());
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  // HealthCheckRequest{service: ""} is the empty message; SERVING is field 1 = 1.
  const call = client.makeServerStreamRequest(
    "/grpc.health.v1.Health/Watch",
    bytes,
    bytes,
    Buffer.alloc(0),
  );
  const first = await new Promise<Buffer>((resolve, reject) => {
    call.once("data", resolve);
    call.once("error", reject);
  });
  call.on("error", () => {});
  call.cancel();
  t.deepEqual([...first], [0x08, 0x01]);
  t.deepEqual(watched, ["/grpc.health.v1.Health/Watch"]);
});

test("proto-loader and @grpc/reflection: the files reflection serves are the descriptor set's own, comments included", (t) => {
  const set = readFileSync(new URL("../gen/tokenvend.binpb", import.meta.url));
  const pkg = reflectionPackage(set);
  // proto-loader's shape: message entries list the files as encoded descriptors.
  const listed = Object.values(pkg).filter(
    (d) => "fileDescriptorProtos" in d && Array.isArray(d.fileDescriptorProtos),
  );
  t.true(listed.length > 0, "entries with fileDescriptorProtos");
  // @grpc/reflection reads them: ask it, through the public addToServer, for a file.
  const impls: grpc.UntypedServiceImplementation[] = [];
  new ReflectionService(pkg).addToServer({
    addService: (definition, impl) => {
      if (Object.values(definition)[0]?.path.startsWith("/grpc.reflection.v1.")) impls.push(impl);
    },
  });
  const stream = Object.assign(new EventEmitter(), {
    written: [] as { fileDescriptorResponse?: { fileDescriptorProto: number[][] } }[],
    write(m: (typeof stream.written)[number]) {
      stream.written.push(m);
    },
    end() {},
  });
  const info = impls[0]?.ServerReflectionInfo as ((s: unknown) => void) | undefined;
  if (info === undefined) throw new Error("reflection added no v1 service");
  info(stream);
  stream.emit("data", {
    messageRequest: "fileContainingSymbol",
    fileContainingSymbol: "tokenvend.v1.GetValidTokensRequest",
  });
  const files = (stream.written[0]?.fileDescriptorResponse?.fileDescriptorProto ?? []).map((b) =>
    fromBinary(FileDescriptorProtoSchema, Uint8Array.from(b)),
  );
  const main = files.find((f) => f.name === "tokenvend/v1/token_service.proto");
  const comments = main?.sourceCodeInfo?.location.map((l) => l.leadingComments) ?? [];
  t.true(
    comments.some((c) => c.includes("GetValidTokensRequest names one session's token")),
    "the proto comments are served",
  );
});

test("connect-node: a request refused before its body was read answers through writeHead, with connection: close on HTTP/1.1", async (t) => {
  const server = createHttpServer({
    services: [{ desc: TokenService, impl: { getToken: () => ({}) } }],
    readMaxBytes: 1024,
  });
  const { port } = await server.listen("127.0.0.1:0");
  t.teardown(() => server.close(0));
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/tokenvend.v1.TokenService/GetToken",
      headers: { "content-type": "application/json", "content-length": "100000" },
      // Keep-alive: the client would reuse the connection unless told not to.
      agent,
    });
    req.on("response", resolve);
    req.on("error", reject);
    req.write("{");
  });
  res.resume();
  t.is(res.statusCode, 429); // resource_exhausted
  t.is(res.headers.connection, "close");
});

test("grpc-js: a server interceptor finds the call's TLS socket, and the handler gets the metadata object the interceptor passed on", async (t) => {
  const { createTestCa } = await import("./support/certs.ts");
  const ca = await createTestCa("internals");
  const cert = await ca.issue("server", "server", ["IP:127.0.0.1"], "server");
  const seen: { connection?: object | undefined; passed?: grpc.Metadata; got?: grpc.Metadata } = {};
  const server = new grpc.Server({
    interceptors: [
      (_method, call) => {
        seen.connection = connectionOf(call);
        return new grpc.ServerInterceptingCall(call, {
          start: (next) =>
            next({
              onReceiveMetadata(md, pass) {
                seen.passed = md;
                pass(md);
              },
            }),
        });
      },
    ],
  });
  server.addService(
    {
      Echo: {
        path: "/test.E/Echo",
        requestStream: false,
        responseStream: false,
        requestSerialize: bytes,
        requestDeserialize: bytes,
        responseSerialize: bytes,
        responseDeserialize: bytes,
      },
    },
    {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        seen.got = call.metadata;
        cb(null, Buffer.alloc(0));
      },
    },
  );
  const { readFile } = await import("node:fs/promises");
  const creds = grpc.ServerCredentials.createSsl(null, [
    { cert_chain: await readFile(cert.cert), private_key: await readFile(cert.key) },
  ]);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))),
  );
  t.teardown(() => server.forceShutdown());
  const client = new grpc.Client(
    `127.0.0.1:${port}`,
    grpc.credentials.createSsl(await readFile(ca.caCert)),
  );
  await new Promise<void>((resolve, reject) =>
    client.makeUnaryRequest("/test.E/Echo", bytes, bytes, Buffer.alloc(0), (e) =>
      e ? reject(e) : resolve(),
    ),
  );
  client.close();
  t.is(
    typeof (seen.connection as { getPeerCertificate?: unknown } | undefined)?.getPeerCertificate,
    "function",
  );
  t.truthy(seen.passed);
  t.is(seen.got, seen.passed);
});

test("node:http: an http.Server that never listens enforces headersTimeout on handed-over connections only after trackRequestTimeouts", async (t) => {
  /** How a connection that sends half its headers ends: 408 or still open after 1.5 s. */
  const slowHeaders = async (track: boolean) => {
    const h1 = http.createServer(
      { headersTimeout: 300, connectionsCheckingInterval: 100 },
      () => {},
    );
    if (track) trackRequestTimeouts(h1);
    const listener = net.createServer((socket) => h1.emit("connection", socket));
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
    const socket = net.connect((listener.address() as net.AddressInfo).port, "127.0.0.1");
    let got = "";
    socket.on("data", (d: Buffer) => {
      got += d.toString("latin1");
    });
    socket.write("GET / HTTP/1.1\r\nHost: x\r\n");
    const ended = await Promise.race([
      new Promise<string>((resolve) => socket.once("close", () => resolve(got.slice(0, 12)))),
      new Promise<string>((resolve) => setTimeout(() => resolve("still open"), 1_500)),
    ]);
    socket.destroy();
    listener.close();
    h1.close();
    return ended;
  };
  t.is(await slowHeaders(false), "still open", "untracked: Node never times it out");
  t.is(await slowHeaders(true), "HTTP/1.1 408");
});

test("connect-es: undecodable binary is INTERNAL 'parse binary:'; unary calls abort the context with it before interceptors, streams throw it through them", async (t) => {
  const seen: { aborted?: unknown; intercepted?: unknown; unaryRan?: boolean } = {};
  const router = createConnectRouter({
    requestGate: (ctx) =>
      ctx.signal.addEventListener("abort", () => {
        if (ctx.method.name === "GetToken") seen.aborted = ctx.signal.reason;
      }),
    interceptors: [
      (next) => async (req) => {
        if (!req.stream) seen.unaryRan = true;
        try {
          return await next(req);
        } catch (err) {
          seen.intercepted = err;
          throw err;
        }
      },
    ],
  });
  router.service(TokenService, {
    getToken: () => ({}),
    async *watchToken() {},
  });
  const handler = (name: string) => router.handlers.find((h) => h.method.name === name)!;
  const garbage = new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
  const request = (path: string, contentType: string, body: Uint8Array) => ({
    httpVersion: "2.0",
    method: "POST",
    url: `http://x${path}`,
    header: new Headers({ "content-type": contentType }),
    body: (async function* () {
      yield body;
    })(),
    signal: new AbortController().signal,
  });
  const unary = await handler("GetToken")(
    request("/tokenvend.v1.TokenService/GetToken", "application/proto", garbage),
  );
  for await (const _ of unary.body as AsyncIterable<Uint8Array>);
  t.true(seen.aborted instanceof ConnectError);
  t.is((seen.aborted as ConnectError).code, Code.Internal);
  t.regex((seen.aborted as ConnectError).rawMessage, /^parse binary:/);
  t.is(seen.unaryRan, undefined, "no interceptor ran for the unary call");
  const frame = new Uint8Array(5 + garbage.length);
  new DataView(frame.buffer).setUint32(1, garbage.length);
  frame.set(garbage, 5);
  const stream = await handler("WatchToken")(
    request("/tokenvend.v1.TokenService/WatchToken", "application/connect+proto", frame),
  );
  for await (const _ of stream.body as AsyncIterable<Uint8Array>);
  t.true(seen.intercepted instanceof ConnectError);
  t.regex((seen.intercepted as ConnectError).rawMessage, /^parse binary:/);
  // What the listener does with both: INVALID_ARGUMENT, in place.
  undecodableAsInvalidArgument(seen.aborted, TokenService.method.getToken);
  t.is((seen.aborted as ConnectError).code, Code.InvalidArgument);
  t.is(
    (seen.aborted as ConnectError).message,
    "[invalid_argument] cannot decode tokenvend.v1.GetTokenRequest",
  );
});
