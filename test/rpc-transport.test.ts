// Both listeners, proved with real clients: one small TokenService implementation
// mounted on the grpc-js listener and on the connect-node listener must give
// grpc-js, the Connect client (gRPC, gRPC-Web, Connect; HTTP/1.1 and h2c) and
// curl the same answers, the same codes and the same ErrorInfo / BadRequest.
// Also: cancellation reaches the handler's signal, deadlines, interceptors and
// metadata, health, reflection with the proto comments, message size limits,
// INTERNAL without the original message, and a bounded graceful shutdown.

import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  createContextKey,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import test from "ava";
import { protoPath as healthProtoPath } from "grpc-health-check";
import {
  type BadRequest,
  BadRequestSchema,
  type ErrorInfo,
  ErrorInfoSchema,
} from "../gen/google/rpc/error_details_pb.js";
import {
  GetTokenRequestSchema,
  GetTokenResponseSchema,
  RenewalReason,
  RevokeSessionRequestSchema,
  RevokeSessionResponseSchema,
  TokenService,
  type WatchTokenRequest,
  WatchTokenRequestSchema,
  type WatchTokenResponse,
  WatchTokenResponseSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import {
  createGrpcServer,
  createHttpServer,
  createWireErrors,
  decodeGrpcStatusDetails,
  formatHostPort,
  type GrpcServer,
  grpcStatusDetailsKey,
  type HttpServer,
  type PushStreamObserver,
  pushStream,
  type StreamSink,
} from "../src/transport/index.ts";
import { createGrpcJsClient, type GrpcCallError } from "./support/grpc-client.ts";
import {
  createRawClient,
  type RawCall,
  type RawClient,
  type RawProtocol,
} from "./support/raw-rpc.ts";
import { toolPath } from "./support/tools.ts";

const exec = promisify(execFile);
const descriptorSet = readFileSync(new URL("../gen/tokenvend.binpb", import.meta.url));

/** Runs a command with `input` on its stdin; resolves with its stdout. */
function run(cmd: string, args: string[], input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 1 << 24 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    );
    child.stdin?.end(input);
  });
}

// ---------------------------------------------------------------------------
// The implementation under test, and what it records for the assertions.

const callerKey = createContextKey<string>("", { description: "x-caller, seen by an interceptor" });
const secret = "hunter2-db-password";
/** Promises by handler-call id (the id travels in the request's grant). */
function registry<T>() {
  const map = new Map<string, PromiseWithResolvers<T>>();
  return (id: string) => {
    let w = map.get(id);
    if (w === undefined) {
      w = Promise.withResolvers<T>();
      map.set(id, w);
    }
    return w;
  };
}
const aborted = registry<unknown>();
const sentAll = registry<void>();
const delivered = registry<void>();
const manyMessages = 10_000;
const started = registry<void>();
/** Resolves with the abort reason once that handler's signal aborts. */
const abortedOf = (id: string) => aborted(id).promise;
/** Resolves once that "many" handler has sent its last message. */
const sentAllOf = (id: string) => sentAll(id).promise;
/** A client got the n-th message of the stream opened with this grant. */
const deliveredTo = (grant: string, n: number) => delivered(`${grant}#${n}`).resolve();
/** Resolves once that handler runs: timing assertions wait for it, not for a sleep. */
const startedOf = (id: string) => started(id).promise;
const untilAborted = (ctx: HandlerContext, id: string) =>
  new Promise<void>((resolve) => {
    started(id).resolve();
    const done = () => {
      aborted(id).resolve(ctx.signal.reason);
      resolve();
    };
    if (ctx.signal.aborted) done();
    else ctx.signal.addEventListener("abort", done, { once: true });
  });

const credential = (accessToken: string, generation = 1n) => ({
  accessToken,
  tokenType: "Bearer",
  scopes: ["read"],
  generation,
});

const notFound = (grant: string) =>
  new ConnectError(`no grant named ${grant}`, Code.NotFound, undefined, [
    { desc: ErrorInfoSchema, value: { reason: "GRANT_NOT_FOUND", domain: "tokenvend" } },
    {
      desc: BadRequestSchema,
      value: { fieldViolations: [{ field: "grant", description: "unknown grant" }] },
    },
  ]);

const impl: Partial<ServiceImpl<typeof TokenService>> = {
  async getToken(req, ctx) {
    const [kind, id = ""] = req.grant.split(":");
    switch (kind) {
      case "ok":
        return { credential: credential("at-ok") };
      case "ctx":
        // Metadata reaches requestHeader, an interceptor's value reaches ctx.values,
        // and what the handler sets reaches the caller's headers and trailers.
        ctx.responseHeader.set("x-served-by", "tokenvend");
        ctx.responseTrailer.set("x-trailer", "t1");
        return {
          credential: credential(
            [
              ctx.requestHeader.get("x-caller"),
              ctx.values.get(callerKey),
              ctx.requestHeader.get("x-blob-bin"),
              ctx.protocolName,
              ctx.method.name,
              ctx.timeoutMs() !== undefined ? "deadline" : "no-deadline",
            ].join("|"),
          ),
        };
      case "boom":
        throw new Error(`cannot reach mongodb://admin:${secret}@db (${id})`);
      case "wait":
        await untilAborted(ctx, id);
        throw ctx.signal.reason;
      case "store-down":
        throw new StoreDown(`store down (${id})`);
      case "late":
        // A store call cut short by the deadline: the domain error comes after it.
        await untilAborted(ctx, id);
        throw new StoreDown(`store call aborted (${id})`);
      case "slow":
        started(id).resolve();
        await new Promise((r) => setTimeout(r, 300));
        return { credential: credential("at-slow") };
      default:
        throw notFound(req.grant);
    }
  },
  watchToken: pushStream(
    (req: WatchTokenRequest, ctx: HandlerContext, sink: StreamSink<WatchTokenResponse>) => {
      const grant = req.target.case === "grant" ? req.target.value : "";
      const [kind, id = ""] = grant.split(":");
      const send = (token: string, generation = 1n, reason = RenewalReason.INITIAL) =>
        sink.send(
          create(WatchTokenResponseSchema, { credential: credential(token, generation), reason }),
        );
      switch (kind) {
        case "three":
          // Each once the client has the one before: a push stream keeps only the newest unsent.
          void (async () => {
            for (let g = 1n; g <= 3n; g++) {
              send(`at-${g}`, g);
              await delivered(`${grant}#${g}`).promise;
            }
            sink.end();
          })();
          return;
        case "fail":
          send("at-1");
          sink.end(
            new ConnectError("token revoked", Code.FailedPrecondition, undefined, [
              { desc: ErrorInfoSchema, value: { reason: "REFRESH_FAILED", domain: "tokenvend" } },
            ]),
          );
          return;
        case "boom":
          send("at-1");
          sink.end(new Error(`stream broke: ${secret} (${id})`));
          return;
        case "forever":
          send("at-1");
          void untilAborted(ctx, id);
          return;
        case "many":
          // One ~1 KiB message per turn of the event loop, whoever reads them.
          void (async () => {
            for (let i = 0; i < manyMessages; i++) {
              send(`${i}:${"x".repeat(1024)}`, BigInt(i + 1), RenewalReason.REFRESHED);
              await new Promise((resolve) => setImmediate(resolve));
            }
            sentAll(id).resolve();
            sink.end();
          })();
          return;
        default:
          throw notFound(grant);
      }
    },
  ),
};

/** Stands in for `intercept` on the gRPC listener's push streams. */
const observeStreams: PushStreamObserver = (ctx) => {
  ctx.values.set(callerKey, `seen:${ctx.requestHeader.get("x-caller") ?? ""}`);
  return { run: (fn) => fn(), end: () => {} };
};

/** What config.ts defaults to; the limits test sends 200 KiB. */
const maxMessageBytes = 128 * 1024;
/** The one service under test, with the message limit both listeners require. */
const served = {
  services: [{ desc: TokenService, impl }],
  maxReceiveMessageBytes: maxMessageBytes,
  readMaxBytes: maxMessageBytes,
};

/** A domain error of the application under test, and its table: UNAVAILABLE. */
class StoreDown extends Error {}
const appErrors = (err: unknown) =>
  err instanceof StoreDown
    ? new ConnectError("store unavailable", Code.Unavailable)
    : new ConnectError("internal error", Code.Internal, undefined, undefined, err);

/** The error an interceptor saw, by the unary request's grant. */
const intercepted = new Map<string, unknown>();
const intercept: Interceptor = (next) => async (req) => {
  req.contextValues.set(callerKey, `seen:${req.header.get("x-caller") ?? ""}`);
  try {
    return await next(req);
  } catch (err) {
    if (!req.stream) intercepted.set((req.message as unknown as { grant: string }).grant, err);
    throw err;
  }
};

interface Reported {
  err: unknown;
  method: string;
}

interface Listeners {
  grpc: GrpcServer;
  http: HttpServer;
  grpcAddr: string;
  httpUrl: string;
  reported: Reported[];
}

async function startListeners(): Promise<Listeners> {
  const reported: Reported[] = [];
  const common = {
    ...served,
    interceptors: [intercept],
    pushStreamObserver: observeStreams,
    errors: createWireErrors({
      toConnectError: appErrors,
      onInternalError: (err, method) => reported.push({ err, method }),
    }),
  };
  const grpcServer = createGrpcServer({ ...common, reflectionDescriptorSet: descriptorSet });
  const httpServer = createHttpServer(common);
  const g = await grpcServer.listen("127.0.0.1:0");
  const h = await httpServer.listen("127.0.0.1:0");
  grpcServer.setServing(true);
  return {
    grpc: grpcServer,
    http: httpServer,
    grpcAddr: `127.0.0.1:${g.port}`,
    httpUrl: `http://127.0.0.1:${h.port}`,
    reported,
  };
}

let L: Listeners;
const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));
/** What onInternalError got for the call whose request carried this id. */
const reportsOf = (id: string) => L.reported.filter((r) => messageOf(r.err).includes(`(${id})`));
test.before(async () => {
  L = await startListeners();
});
test.after.always(async () => {
  await Promise.all([L?.grpc.shutdown(1000), L?.http.close(1000)]);
});

// ---------------------------------------------------------------------------
// Every client, reduced to one shape so their answers compare with deepEqual.

interface Failure {
  code: number;
  message: string;
  errorInfo?: { reason: string; domain: string };
  violations?: { field: string; description: string }[];
}
type Outcome = { token: string } | Failure;

interface Stream {
  /** The tokens received, then the outcome of the end of the stream. */
  collect(): Promise<{ tokens: string[]; end: "ok" | Failure }>;
  /** Waits for the first message, then cancels the call from the client. */
  firstThenCancel(): Promise<string>;
}

interface Target {
  name: string;
  /** What the handler sees as ctx.protocolName. */
  protocol: "grpc" | "grpc-web" | "connect";
  getToken(grant: string, headers?: Record<string, string>): Promise<Outcome>;
  revoke(): Promise<Outcome>;
  watch(grant: string): Stream;
  close(): void;
}

function failure(code: number, message: string, info?: ErrorInfo, bad?: BadRequest): Failure {
  const f: Failure = { code, message };
  if (info !== undefined) f.errorInfo = { reason: info.reason, domain: info.domain };
  if (bad !== undefined) {
    f.violations = bad.fieldViolations.map((v) => ({ field: v.field, description: v.description }));
  }
  return f;
}

function fromConnectError(e: unknown): Failure {
  const err = ConnectError.from(e);
  return failure(
    err.code,
    err.rawMessage,
    err.findDetails(ErrorInfoSchema)[0],
    err.findDetails(BadRequestSchema)[0],
  );
}

function fromGrpcError(e: unknown): Failure {
  const err = e as GrpcCallError;
  const bin = err.metadata?.get(grpcStatusDetailsKey)[0];
  if (bin === undefined) return failure(err.code, err.details);
  const status = decodeGrpcStatusDetails(bin as Buffer);
  // The Status in the trailer repeats the code and message: they must agree.
  if (status.code !== err.code || status.message !== err.details) {
    throw new Error(`grpc-status-details-bin disagrees: ${status.code} ${status.message}`);
  }
  return failure(err.code, err.details, status.errorInfo, status.badRequest);
}

function connectTarget(name: string, protocol: Target["protocol"], transport: Transport): Target {
  const client = createClient(TokenService, transport);
  return {
    name,
    protocol,
    async getToken(grant, headers) {
      try {
        const res = await client.getToken({ grant }, headers ? { headers } : {});
        return { token: res.credential?.accessToken ?? "" };
      } catch (e) {
        return fromConnectError(e);
      }
    },
    async revoke() {
      try {
        await client.revokeSession({ sessionId: "s" });
        return { token: "" };
      } catch (e) {
        return fromConnectError(e);
      }
    },
    watch(grant) {
      const ac = new AbortController();
      const messages = client.watchToken(
        { target: { case: "grant", value: grant } },
        { signal: ac.signal },
      );
      return {
        async collect() {
          const tokens: string[] = [];
          try {
            for await (const m of messages) {
              tokens.push(m.credential?.accessToken ?? "");
              deliveredTo(grant, tokens.length);
            }
            return { tokens, end: "ok" };
          } catch (e) {
            return { tokens, end: fromConnectError(e) };
          }
        },
        async firstThenCancel() {
          for await (const m of messages) {
            ac.abort();
            return m.credential?.accessToken ?? "";
          }
          throw new Error("stream ended without a message");
        },
      };
    },
    close() {},
  };
}

function grpcJsTarget(address: string): Target {
  const client = createGrpcJsClient(TokenService, address);
  const getToken = client.unary("GetToken", GetTokenRequestSchema, GetTokenResponseSchema);
  const revoke = client.unary(
    "RevokeSession",
    RevokeSessionRequestSchema,
    RevokeSessionResponseSchema,
  );
  return {
    name: "grpc-js -> grpc listener",
    protocol: "grpc",
    async getToken(grant, headers) {
      try {
        const res = await getToken(create(GetTokenRequestSchema, { grant }), {
          ...(headers ? { metadata: headers } : {}),
        });
        return { token: res.credential?.accessToken ?? "" };
      } catch (e) {
        return fromGrpcError(e);
      }
    },
    async revoke() {
      try {
        await revoke(create(RevokeSessionRequestSchema, { sessionId: "s" }));
        return { token: "" };
      } catch (e) {
        return fromGrpcError(e);
      }
    },
    watch(grant) {
      const s = client.stream(
        "WatchToken",
        WatchTokenRequestSchema,
        WatchTokenResponseSchema,
        create(WatchTokenRequestSchema, { target: { case: "grant", value: grant } }),
      );
      return {
        async collect() {
          const tokens: string[] = [];
          try {
            for await (const m of s.messages) {
              tokens.push(m.credential?.accessToken ?? "");
              deliveredTo(grant, tokens.length);
            }
            return { tokens, end: "ok" };
          } catch (e) {
            return { tokens, end: fromGrpcError(e) };
          }
        },
        firstThenCancel() {
          return new Promise((resolve, reject) => {
            s.call.once("data", (m: WatchTokenResponse) => {
              s.cancel();
              resolve(m.credential?.accessToken ?? "");
            });
            s.call.on("error", (e: GrpcCallError) => {
              if (e.code !== grpc.status.CANCELLED) reject(e);
            });
          });
        },
      };
    },
    close: () => client.close(),
  };
}

/** curl posting JSON with the Connect protocol: what an operator types. */
function curlTarget(httpVersion: "1.1" | "2"): Target {
  const flag = httpVersion === "1.1" ? "--http1.1" : "--http2-prior-knowledge";
  const unsupported = () => {
    throw new Error("curl target: unary only");
  };
  const post = async (method: string, body: object, headers: Record<string, string> = {}) => {
    const args = [
      "-sS",
      flag,
      "-H",
      "content-type: application/json",
      ...Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
      "--data-binary",
      "@-", // the body on stdin: a 200 KiB request does not fit in argv
      "-w",
      "\n%{http_code} %{http_version}",
      `${L.httpUrl}/tokenvend.v1.TokenService/${method}`,
    ];
    const stdout = await run("curl", args, JSON.stringify(body));
    const nl = stdout.lastIndexOf("\n");
    const [status, version] = stdout.slice(nl + 1).split(" ");
    if (version !== (httpVersion === "1.1" ? "1.1" : "2")) {
      throw new Error(`curl spoke HTTP/${version}, not ${httpVersion}`);
    }
    return { status: Number(status), json: JSON.parse(stdout.slice(0, nl)) };
  };
  const outcome = ({ status, json }: { status: number; json: ConnectJsonError & GetTokenJson }) => {
    if (status === 200) return { token: json.credential?.accessToken ?? "" };
    const info = json.details?.find((d) => d.type === "google.rpc.ErrorInfo");
    const bad = json.details?.find((d) => d.type === "google.rpc.BadRequest");
    return failure(
      codeOf(json.code),
      json.message ?? "",
      info && fromBinary(ErrorInfoSchema, Buffer.from(info.value, "base64")),
      bad && fromBinary(BadRequestSchema, Buffer.from(bad.value, "base64")),
    );
  };
  return {
    name: `curl JSON HTTP/${httpVersion} -> http listener`,
    protocol: "connect",
    getToken: async (grant, headers) => outcome(await post("GetToken", { grant }, headers)),
    revoke: async () => outcome(await post("RevokeSession", { sessionId: "s" })),
    watch: unsupported,
    close() {},
  };
}

interface ConnectJsonError {
  code?: string;
  message?: string;
  details?: { type: string; value: string }[];
}
interface GetTokenJson {
  credential?: { accessToken?: string };
}

/** "not_found" -> Code.NotFound, as the Connect protocol spells codes. */
function codeOf(name: string | undefined): number {
  for (const [k, v] of Object.entries(Code)) {
    if (
      typeof v === "number" &&
      k.replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase()) === name
    ) {
      return v;
    }
  }
  throw new Error(`unknown Connect code ${name}`);
}

function allTargets(): Target[] {
  const grpcUrl = `http://${L.grpcAddr}`;
  return [
    grpcJsTarget(L.grpcAddr),
    connectTarget(
      "connect gRPC -> grpc listener",
      "grpc",
      createGrpcTransport({ baseUrl: grpcUrl }),
    ),
    connectTarget(
      "connect gRPC h2c -> http listener",
      "grpc",
      createGrpcTransport({ baseUrl: L.httpUrl }),
    ),
    connectTarget(
      "connect gRPC-Web HTTP/1.1 -> http listener",
      "grpc-web",
      createGrpcWebTransport({ baseUrl: L.httpUrl, httpVersion: "1.1" }),
    ),
    connectTarget(
      "connect gRPC-Web h2c -> http listener",
      "grpc-web",
      createGrpcWebTransport({ baseUrl: L.httpUrl, httpVersion: "2" }),
    ),
    connectTarget(
      "connect JSON HTTP/1.1 -> http listener",
      "connect",
      createConnectTransport({ baseUrl: L.httpUrl, httpVersion: "1.1" }),
    ),
    connectTarget(
      "connect binary h2c -> http listener",
      "connect",
      createConnectTransport({ baseUrl: L.httpUrl, httpVersion: "2", useBinaryFormat: true }),
    ),
    curlTarget("1.1"),
    curlTarget("2"),
  ];
}

const streamingTargets = () => allTargets().filter((t) => !t.name.startsWith("curl"));

// ---------------------------------------------------------------------------

test("unary: every client gets the same token, error code, message, ErrorInfo and BadRequest", async (t) => {
  for (const target of allTargets()) {
    t.deepEqual(await target.getToken("ok"), { token: "at-ok" }, target.name);
    t.deepEqual(
      await target.getToken("nope"),
      {
        code: Code.NotFound,
        message: "no grant named nope",
        errorInfo: { reason: "GRANT_NOT_FOUND", domain: "tokenvend" },
        violations: [{ field: "grant", description: "unknown grant" }],
      },
      target.name,
    );
    const unimplemented = await target.revoke();
    t.is((unimplemented as Failure).code, Code.Unimplemented, target.name);
    target.close();
  }
});

test("unary: an unexpected error is INTERNAL without its message, and reaches onInternalError", async (t) => {
  let n = 0;
  for (const target of allTargets()) {
    const id = `unary-boom-${n++}`;
    const out = await target.getToken(`boom:${id}`);
    t.deepEqual(out, { code: Code.Internal, message: "internal error" }, target.name);
    t.false(JSON.stringify(out).includes(secret), target.name);
    const reported = reportsOf(id);
    t.is(reported.length, 1, target.name);
    t.is(reported[0]?.method, "/tokenvend.v1.TokenService/GetToken", target.name);
    t.true(messageOf(reported[0]?.err).includes(secret), target.name);
    target.close();
  }
});

test("unary: metadata reaches ctx.requestHeader, interceptors set ctx.values, headers and trailers come back", async (t) => {
  const blob = Buffer.from([0, 1, 2, 254, 255]);
  // Binary metadata travels base64 (unpadded on the wire), as a Connect handler sees it.
  const blobB64 = blob.toString("base64").replace(/=+$/, "");
  for (const target of allTargets()) {
    const out = await target.getToken("ctx", { "x-caller": "alice" });
    const [caller, value, bin, protocol, method, deadline] = (out as { token: string }).token.split(
      "|",
    );
    t.is(caller, "alice", target.name);
    t.is(value, "seen:alice", target.name);
    t.is(protocol, target.protocol, target.name);
    t.is(method, "GetToken", target.name);
    t.is(deadline, "no-deadline", target.name);
    t.is(bin, "", target.name); // not sent here
    target.close();
  }
  // Binary metadata and response metadata, seen from grpc-js.
  const client = new grpc.Client(L.grpcAddr, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set("x-caller", "bob");
  md.set("x-blob-bin", blob);
  let header: grpc.Metadata | undefined;
  let trailer: grpc.Metadata | undefined;
  const token = await new Promise<string>((resolve, reject) => {
    const call = client.makeUnaryRequest(
      "/tokenvend.v1.TokenService/GetToken",
      (m: MessageInitShape<typeof GetTokenRequestSchema>) =>
        Buffer.from(toBinary(GetTokenRequestSchema, create(GetTokenRequestSchema, m))),
      (b: Buffer) => fromBinary(GetTokenResponseSchema, b),
      { grant: "ctx" },
      md,
      { deadline: Date.now() + 10_000 },
      (err, res) => (err ? reject(err) : resolve(res?.credential?.accessToken ?? "")),
    );
    call.on("metadata", (m) => {
      header = m;
    });
    call.on("status", (s) => {
      trailer = s.metadata;
    });
  });
  client.close();
  const [caller, value, bin, , , deadline] = token.split("|");
  t.is(caller, "bob");
  t.is(value, "seen:bob");
  t.deepEqual(Buffer.from(bin ?? "", "base64"), blob);
  t.true([blobB64, blob.toString("base64")].includes(bin ?? ""));
  t.is(deadline, "deadline");
  t.deepEqual(header?.get("x-served-by"), ["tokenvend"]);
  t.deepEqual(trailer?.get("x-trailer"), ["t1"]);
  // The same headers and trailers through the Connect client, on both listeners.
  for (const [name, transport] of [
    ["grpc listener", createGrpcTransport({ baseUrl: `http://${L.grpcAddr}` })],
    ["http listener", createConnectTransport({ baseUrl: L.httpUrl, httpVersion: "1.1" })],
  ] as const) {
    let h: Headers | undefined;
    let tr: Headers | undefined;
    await createClient(TokenService, transport).getToken(
      { grant: "ctx" },
      { onHeader: (x) => (h = x), onTrailer: (x) => (tr = x) },
    );
    t.is(h?.get("x-served-by"), "tokenvend", name);
    t.is(tr?.get("x-trailer"), "t1", name);
  }
});

test("server stream: three messages then OK; an error mid-stream keeps its code and ErrorInfo", async (t) => {
  for (const target of streamingTargets()) {
    t.deepEqual(
      await target.watch(`three:${target.name}`).collect(),
      { tokens: ["at-1", "at-2", "at-3"], end: "ok" },
      target.name,
    );
    t.deepEqual(
      await target.watch("fail").collect(),
      {
        tokens: ["at-1"],
        end: {
          code: Code.FailedPrecondition,
          message: "token revoked",
          errorInfo: { reason: "REFRESH_FAILED", domain: "tokenvend" },
        },
      },
      target.name,
    );
    t.deepEqual(
      await target.watch("nope").collect(),
      {
        tokens: [],
        end: {
          code: Code.NotFound,
          message: "no grant named nope",
          errorInfo: { reason: "GRANT_NOT_FOUND", domain: "tokenvend" },
          violations: [{ field: "grant", description: "unknown grant" }],
        },
      },
      target.name,
    );
    const id = `stream-boom-${target.name}`;
    t.deepEqual(
      await target.watch(`boom:${id}`).collect(),
      { tokens: ["at-1"], end: { code: Code.Internal, message: "internal error" } },
      target.name,
    );
    const reported = reportsOf(id);
    t.is(reported.length, 1, target.name);
    t.is(reported[0]?.method, "/tokenvend.v1.TokenService/WatchToken", target.name);
    target.close();
  }
});

test("server stream: a client cancel aborts the handler's signal", async (t) => {
  let n = 0;
  for (const target of streamingTargets()) {
    const id = `cancel-${n++}`;
    t.is(await target.watch(`forever:${id}`).firstThenCancel(), "at-1", target.name);
    const reason = await within(abortedOf(id), 5_000);
    t.truthy(reason, `${target.name}: handler signal aborted`);
    target.close();
  }
});

test("server stream: a slow reader gets the newest message next, not the backlog, on both listeners", async (t) => {
  const newest = `${manyMessages - 1}:`;
  const check = (listener: string, got: string[], bound: number) => {
    t.true(got.at(-1)?.startsWith(newest), `${listener}: the last message is the newest`);
    const order = got.map((m) => Number(m.split(":")[0]));
    t.true(
      order.every((n, i) => i === 0 || n > order[i - 1]!),
      `${listener}: messages in order`,
    );
    // What flow-control windows and stream buffers held, then the newest: far fewer than sent.
    t.true(got.length < bound, `${listener}: ${got.length} of ${manyMessages} delivered`);
  };

  // grpc-js client: pause after the first message until the handler sent them all.
  const client = createGrpcJsClient(TokenService, L.grpcAddr);
  const s = client.stream(
    "WatchToken",
    WatchTokenRequestSchema,
    WatchTokenResponseSchema,
    create(WatchTokenRequestSchema, { target: { case: "grant", value: "many:slow-grpc" } }),
  );
  const got: string[] = [];
  s.call.on("data", (m: WatchTokenResponse) => {
    got.push(m.credential?.accessToken ?? "");
    if (got.length === 1) s.call.pause();
  });
  const ended = new Promise<void>((resolve, reject) => {
    s.call.on("end", resolve);
    s.call.on("error", reject);
  });
  await within(sentAllOf("slow-grpc"), 60_000);
  s.call.resume();
  await within(ended, 10_000);
  check("grpc listener", got, manyMessages / 5);
  client.close();

  // Connect client over h2c: stop iterating after the first message until the handler sent them all.
  const connect = createClient(
    TokenService,
    createConnectTransport({ baseUrl: L.httpUrl, httpVersion: "2", useBinaryFormat: true }),
  );
  const it = connect
    .watchToken({ target: { case: "grant", value: "many:slow-http" } })
    [Symbol.asyncIterator]();
  const first = await it.next();
  const gotHttp = [first.done === true ? "" : (first.value.credential?.accessToken ?? "")];
  await within(sentAllOf("slow-http"), 60_000);
  for (let r = await it.next(); r.done !== true; r = await it.next()) {
    gotHttp.push(r.value.credential?.accessToken ?? "");
  }
  // connect-node's client opens wider HTTP/2 windows: more in flight, still bounded.
  check("http listener", gotHttp, manyMessages / 2);
});

// Serial (AVA runs these first, alone): a 200 ms deadline must not expire
// before the request even reaches a server busy with the other tests.
test.serial(
  "unary: the caller's deadline aborts the handler's signal and gives DEADLINE_EXCEEDED",
  async (t) => {
    for (const [i, address] of [L.grpcAddr].entries()) {
      const client = createGrpcJsClient(TokenService, address);
      const getToken = client.unary("GetToken", GetTokenRequestSchema, GetTokenResponseSchema);
      const err = await t.throwsAsync(
        getToken(create(GetTokenRequestSchema, { grant: `wait:dl-${i}` }), { deadlineMs: 200 }),
      );
      t.is((err as unknown as GrpcCallError).code, grpc.status.DEADLINE_EXCEEDED);
      t.truthy(await within(abortedOf(`dl-${i}`), 5_000));
      client.close();
    }
    const client = createClient(
      TokenService,
      createConnectTransport({ baseUrl: L.httpUrl, httpVersion: "1.1" }),
    );
    const err = await t.throwsAsync(client.getToken({ grant: "wait:dl-http" }, { timeoutMs: 200 }));
    t.is(ConnectError.from(err).code, Code.DeadlineExceeded);
    t.truthy(await within(abortedOf("dl-http"), 5_000));
  },
);

test.serial(
  "unary: a domain error goes through the application's table on both listeners; after the caller's deadline, the deadline is the status",
  async (t) => {
    const grpcJs = grpcJsTarget(L.grpcAddr);
    const connect = connectTarget(
      "connect HTTP/1.1",
      "connect",
      createConnectTransport({ baseUrl: L.httpUrl, httpVersion: "1.1" }),
    );
    for (const target of [grpcJs, connect]) {
      t.deepEqual(
        await target.getToken(`store-down:sd-${target.name}`),
        { code: Code.Unavailable, message: "store unavailable" },
        target.name,
      );
    }
    // Deadline first, then the handler's domain error: what the interceptors and the caller see.
    const deadlineOnGrpc = createGrpcJsClient(TokenService, L.grpcAddr);
    const err = await t.throwsAsync(
      deadlineOnGrpc.unary(
        "GetToken",
        GetTokenRequestSchema,
        GetTokenResponseSchema,
      )(create(GetTokenRequestSchema, { grant: "late:late-grpc" }), { deadlineMs: 200 }),
    );
    t.is((err as unknown as GrpcCallError).code, grpc.status.DEADLINE_EXCEEDED);
    deadlineOnGrpc.close();
    // The deadline in the header only: the status comes from the server, not the client's timer.
    const res = await fetch(`${L.httpUrl}/tokenvend.v1.TokenService/GetToken`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-timeout-ms": "200" },
      body: JSON.stringify({ grant: "late:late-http" }),
    });
    t.is(((await res.json()) as ConnectJsonError).code, "deadline_exceeded");
    for (const id of ["late-grpc", "late-http"]) {
      await within(abortedOf(id), 5_000);
      // The handler throws right after its signal aborts; the interceptor sees it just after.
      for (let i = 0; i < 100 && !intercepted.has(`late:${id}`); i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const seen = ConnectError.from(intercepted.get(`late:${id}`));
      t.is(seen.code, Code.DeadlineExceeded, id);
      t.deepEqual(reportsOf(id), [], `${id}: not an internal error`);
    }
    grpcJs.close();
  },
);

test("limits: an oversized request is refused and the listener keeps serving", async (t) => {
  const huge = "x".repeat(200 * 1024);
  const g = grpcJsTarget(L.grpcAddr);
  t.is(((await g.getToken(huge)) as Failure).code, Code.ResourceExhausted);
  t.deepEqual(await g.getToken("ok"), { token: "at-ok" });
  g.close();
  for (const target of allTargets().filter((x) => x.name.includes("http listener"))) {
    // The server refuses before the upload ends; curl over h2c may see that as
    // the stream being reset (exit 92) instead of reading the error. Either is
    // a refusal; what must hold is that the listener goes on serving.
    const refused = await target.getToken(huge).catch((e: unknown) => e);
    if (refused instanceof Error) t.regex(refused.message, /curl: \(92\)/, target.name);
    else t.is((refused as Failure).code, Code.ResourceExhausted, target.name);
    t.deepEqual(await target.getToken("ok"), { token: "at-ok" }, target.name);
    target.close();
  }
});

test("limits: undecodable requests are INVALID_ARGUMENT on every protocol of both listeners, and never reach onInternalError", async (t) => {
  const before = L.reported.length;
  const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]); // field 1, absurd length
  const client = new grpc.Client(L.grpcAddr, grpc.credentials.createInsecure());
  const err = await new Promise<grpc.ServiceError>((resolve) =>
    client.makeUnaryRequest(
      "/tokenvend.v1.TokenService/GetToken",
      (b: Buffer) => b,
      (b: Buffer) => b,
      garbage,
      (e) => resolve(e as grpc.ServiceError),
    ),
  );
  client.close();
  t.is(err.code, grpc.status.INVALID_ARGUMENT, "gRPC listener: bad input is INVALID_ARGUMENT");
  t.is(err.details, "cannot decode tokenvend.v1.GetTokenRequest");

  const http = createRawClient(L.httpUrl);
  const grpcJs = createRawClient(`http://${L.grpcAddr}`);
  t.teardown(() => {
    http.close();
    grpcJs.close();
  });
  // Truncated JSON; a character outside the BMP, which JSON.parse's message quotes half of (a
  // lone surrogate the gRPC trailers could not encode: the call went unanswered); a value.
  const jsons = ['{"grant": 5', "\u{F37E5}", '{"grant": {"secret-\u{1F511}": 1}}'].map((text) =>
    new TextEncoder().encode(text),
  );
  const calls: (RawCall & { on: RawClient; name: string })[] = [];
  for (const [method, stream, message] of [
    ["GetToken", false, "tokenvend.v1.GetTokenRequest"],
    ["WatchToken", true, "tokenvend.v1.WatchTokenRequest"],
  ] as const) {
    const path = `/tokenvend.v1.TokenService/${method}`;
    const at = (name: string, on: RawClient, protocol: RawProtocol, http1 = false) => {
      for (const [i, body] of (protocol.endsWith("json") ? jsons : [garbage]).entries()) {
        calls.push({
          name: `${method} ${name} #${i}`,
          on,
          protocol,
          path,
          stream,
          http1,
          body,
          message,
          timeoutMs: 5_000,
        } as never);
      }
    };
    at("gRPC, gRPC listener", grpcJs, "grpc");
    // grpc-js speaks protobuf only: a JSON body there is one more undecodable message.
    at("gRPC JSON, gRPC listener", grpcJs, "grpc+json");
    at("gRPC, HTTP listener", http, "grpc");
    at("gRPC JSON, HTTP listener", http, "grpc+json");
    at("gRPC-Web", http, "grpc-web", true);
    at("gRPC-Web JSON", http, "grpc-web+json", true);
    at("Connect binary, HTTP/1.1", http, "connect", true);
    at("Connect binary, h2c", http, "connect");
    at("Connect JSON, HTTP/1.1", http, "connect+json", true);
    at("Connect JSON, h2c", http, "connect+json");
  }
  for (const c of calls) {
    const out = await c.on.call(c);
    t.is(out.code, Code.InvalidArgument, `${c.name}: ${out.message}`);
    const { message } = c as unknown as { message: string };
    // The message names the type (and a field), never what the body held.
    t.regex(
      out.message,
      c.protocol.endsWith("json") && c.on !== grpcJs
        ? new RegExp(`^cannot decode ${message} from JSON(: field [\\w.]+)?$`)
        : new RegExp(`^cannot decode ${message}$`),
      c.name,
    );
  }
  // Other tests report their own "boom" errors meanwhile; none may be about decoding.
  t.deepEqual(
    L.reported.slice(before).filter((r) => !/boom/.test(messageOf(r.err))),
    [],
    "client mistakes are not internal errors",
  );
  t.deepEqual(await grpcJsTarget(L.grpcAddr).getToken("ok"), { token: "at-ok" });
});

test("health: Check and Watch, overall and per service, follow setServing", async (t) => {
  const s = createGrpcServer(served);
  const { port } = await s.listen("127.0.0.1:0");
  const pkg = grpc.loadPackageDefinition(
    protoLoader.loadSync(healthProtoPath, { enums: String }),
  ) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  const health = new pkg.grpc.health.v1.Health(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  );
  const check = (service: string) =>
    new Promise<string>((resolve, reject) =>
      (health as unknown as HealthClient).Check({ service }, (err, res) =>
        err ? reject(err) : resolve(res.status),
      ),
    );
  t.is(await check(""), "NOT_SERVING", "starts NOT_SERVING until told");
  s.setServing(true);
  t.is(await check(""), "SERVING");
  t.is(await check("tokenvend.v1.TokenService"), "SERVING");
  const unknown = await t.throwsAsync(check("no.such.Service"));
  t.is((unknown as unknown as grpc.ServiceError).code, grpc.status.NOT_FOUND);

  const watch = (health as unknown as HealthClient).Watch({ service: "tokenvend.v1.TokenService" });
  const seen: string[] = [];
  const twoUpdates = new Promise<void>((resolve) => {
    watch.on("data", (m: { status: string }) => {
      seen.push(m.status);
      if (seen.length === 1) s.setServing(false);
      if (seen.length === 2) resolve();
    });
  });
  watch.on("error", () => {});
  await within(twoUpdates, 5_000);
  t.deepEqual(seen, ["SERVING", "NOT_SERVING"]);
  t.is(await check(""), "NOT_SERVING");
  watch.cancel();
  health.close();
  await s.shutdown(500);
});

interface HealthClient {
  Check(
    req: { service: string },
    cb: (err: grpc.ServiceError | null, res: { status: string }) => void,
  ): void;
  Watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
}

test("reflection v1 and v1alpha: list services, and describe with the proto comments", async (t) => {
  const dir = dirname(createRequire(import.meta.url).resolve("@grpc/reflection/package.json"));
  for (const version of ["v1", "v1alpha"] as const) {
    const def = protoLoader.loadSync(
      join(dir, `build/proto/grpc/reflection/${version}/reflection.proto`),
      {
        keepCase: true,
        defaults: true,
        oneofs: true,
      },
    );
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      grpc: { reflection: Record<string, { ServerReflection: grpc.ServiceClientConstructor }> };
    };
    const Ctor = pkg.grpc.reflection[version]?.ServerReflection;
    if (Ctor === undefined) throw new Error(`no ${version} reflection client`);
    const client = new Ctor(
      L.grpcAddr,
      grpc.credentials.createInsecure(),
    ) as unknown as ReflectionClient;
    const ask = (req: object) =>
      new Promise<ReflectionResponse>((resolve, reject) => {
        const call = client.ServerReflectionInfo();
        call.on("data", (m: ReflectionResponse) => {
          resolve(m);
          call.end();
        });
        call.on("error", reject);
        call.write(req);
      });

    const list = await ask({ list_services: "" });
    const names = list.list_services_response?.service.map((s) => s.name) ?? [];
    t.true(names.includes("tokenvend.v1.TokenService"), `${version}: ${names}`);
    t.true(names.includes("grpc.health.v1.Health"), `${version}: ${names}`);

    const files = await ask({ file_containing_symbol: "tokenvend.v1.GetValidTokensRequest" });
    const protos = (files.file_descriptor_response?.file_descriptor_proto ?? []).map((b) =>
      fromBinary(FileDescriptorProtoSchema, b),
    );
    const main = protos.find((f) => f.name === "tokenvend/v1/token_service.proto");
    t.truthy(main, version);
    const comments = main?.sourceCodeInfo?.location.map((l) => l.leadingComments) ?? [];
    t.true(
      comments.some((c) =>
        c.includes("GetValidTokensRequest names one session's token at one provider."),
      ),
      `${version}: comments served`,
    );
    const health = await ask({ file_containing_symbol: "grpc.health.v1.Health" });
    t.true((health.file_descriptor_response?.file_descriptor_proto.length ?? 0) > 0, version);
    client.close();
  }
});

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
}
interface ReflectionClient {
  ServerReflectionInfo(): grpc.ClientDuplexStream<object, ReflectionResponse>;
  close(): void;
}

test("grpcurl: list, describe with comments, and an error with its ErrorInfo", async (t) => {
  // Installed by npm test's tools step; missing, this fails saying how to install it.
  const path = toolPath("grpcurl");
  const grpcurl = async (...args: string[]) => {
    try {
      return (await exec(path, ["-plaintext", ...args])).stdout;
    } catch (e) {
      const err = e as { stdout: string; stderr: string };
      return err.stdout + err.stderr;
    }
  };
  const list = await grpcurl(L.grpcAddr, "list");
  t.regex(list, /tokenvend\.v1\.TokenService/);
  t.regex(list, /grpc\.health\.v1\.Health/);
  const described = await grpcurl(L.grpcAddr, "describe", "tokenvend.v1.GetValidTokensRequest");
  t.regex(described, /GetValidTokensRequest names one session's token at one provider/);
  const ok = await grpcurl(
    "-d",
    '{"grant":"ok"}',
    L.grpcAddr,
    "tokenvend.v1.TokenService/GetToken",
  );
  t.regex(ok, /at-ok/);
  const bad = await grpcurl(
    "-d",
    '{"grant":"nope"}',
    L.grpcAddr,
    "tokenvend.v1.TokenService/GetToken",
  );
  t.regex(bad, /NotFound/);
  t.regex(bad, /GRANT_NOT_FOUND/);
  t.regex(bad, /unknown grant/);
  const health = await grpcurl(L.grpcAddr, "grpc.health.v1.Health/Check");
  t.regex(health, /"status": "SERVING"/);
  const watched = await grpcurl(
    "-max-time",
    "1",
    "-d",
    '{"service":"tokenvend.v1.TokenService"}',
    L.grpcAddr,
    "grpc.health.v1.Health/Watch",
  );
  t.regex(watched, /"status": "SERVING"/);
});

test.serial(
  "shutdown: in-flight calls finish within the grace, streams end UNAVAILABLE after it, both listeners",
  async (t) => {
    const S = await startListeners();
    const targets = [
      grpcJsTarget(S.grpcAddr),
      connectTarget(
        "connect gRPC-Web HTTP/1.1",
        "grpc-web",
        createGrpcWebTransport({ baseUrl: S.httpUrl, httpVersion: "1.1" }),
      ),
      connectTarget(
        "connect h2c",
        "connect",
        createConnectTransport({ baseUrl: S.httpUrl, httpVersion: "2" }),
      ),
    ];
    // Warm up every connection, so each has an open one when the drain starts.
    for (const target of targets) t.deepEqual(await target.getToken("ok"), { token: "at-ok" });
    const slow = targets.map((target, i) => target.getToken(`slow:slow-${i}`));
    const streams = targets.map((target, i) => target.watch(`forever:shutdown-${i}`).collect());
    // Every call is running in its handler when the drain starts.
    await within(
      Promise.all(targets.flatMap((_, i) => [startedOf(`slow-${i}`), startedOf(`shutdown-${i}`)])),
      5_000,
    );
    const startedAt = Date.now();
    await Promise.all([S.grpc.shutdown(800), S.http.close(800)]);
    const took = Date.now() - startedAt;
    t.true(took >= 700 && took < 3_000, `shutdown took ${took} ms`);
    for (const [i, target] of targets.entries()) {
      t.deepEqual(await slow[i], { token: "at-slow" }, `${target.name}: in-flight unary finished`);
      const end = await streams[i];
      t.deepEqual(end?.tokens, ["at-1"], target.name);
      t.is((end?.end as Failure | undefined)?.code, Code.Unavailable, target.name);
      t.truthy(
        await within(abortedOf(`shutdown-${i}`), 1_000),
        `${target.name}: handler signal aborted`,
      );
      target.close();
    }
    // New connections are refused now.
    const after = grpcJsTarget(S.grpcAddr);
    t.is(((await after.getToken("ok")) as Failure).code, Code.Unavailable);
    after.close();
  },
);

test("listen: both listeners bind [::1]:0 and serve there; an address that is not host:port is refused", async (t) => {
  const g = createGrpcServer(served);
  const h = createHttpServer(served);
  t.teardown(() => Promise.all([g.shutdown(0), h.close(0)]));
  const ga = await g.listen("[::1]:0");
  const ha = await h.listen("[::1]:0");
  t.is(ga.host, "::1");
  t.is(ha.host, "::1");
  const grpcTarget = grpcJsTarget(formatHostPort(ga));
  t.deepEqual(await grpcTarget.getToken("ok"), { token: "at-ok" });
  grpcTarget.close();
  const httpTarget = connectTarget(
    "connect HTTP/1.1 over IPv6",
    "connect",
    createConnectTransport({ baseUrl: `http://${formatHostPort(ha)}`, httpVersion: "1.1" }),
  );
  t.deepEqual(await httpTarget.getToken("ok"), { token: "at-ok" });
  const refused = {
    instanceOf: RangeError,
    message:
      'the listen address must be host:port, such as 127.0.0.1:50051 or [::1]:50051; got "::1:0"',
  };
  await t.throwsAsync(createGrpcServer(served).listen("::1:0"), refused);
  await t.throwsAsync(createHttpServer(served).listen("::1:0"), refused);
});

test("shutdown: without in-flight calls it returns at once", async (t) => {
  const S = await startListeners();
  const g = grpcJsTarget(S.grpcAddr);
  const c = connectTarget(
    "connect HTTP/1.1",
    "connect",
    createConnectTransport({ baseUrl: S.httpUrl, httpVersion: "1.1" }),
  );
  const h2 = connectTarget(
    "connect h2c",
    "connect",
    createConnectTransport({ baseUrl: S.httpUrl, httpVersion: "2" }),
  );
  for (const target of [g, c, h2]) t.deepEqual(await target.getToken("ok"), { token: "at-ok" });
  const started = Date.now();
  await Promise.all([S.grpc.shutdown(5_000), S.http.close(5_000)]);
  t.true(Date.now() - started < 1_000, `took ${Date.now() - started} ms`);
  g.close();
});

async function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
