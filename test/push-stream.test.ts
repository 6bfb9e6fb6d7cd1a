// Push streams on the gRPC listener (src/transport/push-stream.ts, GrpcSink): what a
// handler sends arrives in order and intact, a reader that stops reading gets
// the newest message rather than a backlog, the end status follows the last
// message (the grpc-js internals of its direct write path are pinned in
// test/library-internals.test.ts). A server stream is served in push form only,
// and what cannot be served so is refused when the service is registered.
// With telemetry, the push form keeps the telemetry's push-stream observer, and
// gives the span and the metric the interceptor gives the same handler on the
// HTTP listener (through push-iterable.ts), status for status.

import "./support/otel.ts";
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import test from "ava";
import {
  RenewalReason,
  TokenService,
  type WatchTokenRequest,
  WatchTokenRequestSchema,
  type WatchTokenResponse,
  WatchTokenResponseSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { createRpcTelemetry } from "../src/rpc/rpc-interceptor.ts";
import { createRpcMetrics } from "../src/telemetry/metrics.ts";
import {
  createGrpcServer,
  createHttpServer,
  freeze,
  type GrpcServerOptions,
  pushStream,
  type StreamSink,
} from "../src/transport/index.ts";
import { createGrpcJsClient, type GrpcCallError } from "./support/grpc-client.ts";
import { countOf, createTestMeter, finishedSpans, points, tracerProvider } from "./support/otel.ts";

const immediate = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Generation `g`, with an access token of `chars` characters that says which it is. */
const message = (g: number, chars = 16): WatchTokenResponse =>
  freeze(
    create(WatchTokenResponseSchema, {
      credential: { accessToken: `at-${g}-`.padEnd(chars, "x"), generation: BigInt(g) },
      reason: g === 1 ? RenewalReason.INITIAL : RenewalReason.STORED,
    }),
  );

interface Script {
  /** Messages sent, one per turn of the event loop. */
  count: number;
  chars?: number;
  /** How the stream ends after them. */
  end?: ConnectError;
  /** Instead of ending, waits for the call's signal (the client cancels). */
  hold?: boolean;
}

/** A listener: which one, and its interceptors and push-stream observer. */
type Listener = Pick<GrpcServerOptions<[]>, "interceptors" | "pushStreamObserver"> & {
  on?: "grpc" | "http";
};

const maxMessageBytes = 64 * 1024;

/**
 * A WatchToken that follows the script named by the request's grant, and says
 * that it ran and the span active when it started.
 */
function implFor(scripts: Record<string, Script>, sent: Map<string, number>, ran: string[]) {
  const signalled = (ctx: HandlerContext) =>
    new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
  const push = (
    req: WatchTokenRequest,
    ctx: HandlerContext,
    sink: StreamSink<WatchTokenResponse>,
  ) => {
    ran.push(`push ${trace.getActiveSpan()?.spanContext().spanId ?? "no span"}`);
    const name = String(req.target.value);
    const s = scripts[name]!;
    void (async () => {
      for (let g = 1; g <= s.count; g++) {
        sink.send(message(g, s.chars));
        sent.set(name, g);
        await immediate();
      }
      if (s.hold === true) await signalled(ctx);
      sink.end(s.end);
    })();
  };
  return { watchToken: pushStream(push) } satisfies Partial<ServiceImpl<typeof TokenService>>;
}

/** The script's WatchToken on one listener, and a grpc-js client for it (h2c on the HTTP one). */
async function open(scripts: Record<string, Script>, listener: Listener = {}) {
  const sent = new Map<string, number>();
  const ran: string[] = [];
  const { on = "grpc", ...opts } = listener;
  const services = [{ desc: TokenService, impl: implFor(scripts, sent, ran) }];
  let port: number;
  let stop: () => Promise<void>;
  if (on === "grpc") {
    const server = createGrpcServer({ services, maxReceiveMessageBytes: maxMessageBytes, ...opts });
    port = (await server.listen("127.0.0.1:0")).port;
    stop = () => server.shutdown(100);
  } else {
    const server = createHttpServer({
      services,
      readMaxBytes: maxMessageBytes,
      ...(opts.interceptors !== undefined ? { interceptors: opts.interceptors } : {}),
    });
    port = (await server.listen("127.0.0.1:0")).port;
    stop = () => server.close(100);
  }
  const client = createGrpcJsClient(TokenService, `127.0.0.1:${port}`);
  const watch = (grant: string, metadata: Record<string, string> = {}) =>
    client.stream(
      "WatchToken",
      WatchTokenRequestSchema,
      WatchTokenResponseSchema,
      create(WatchTokenRequestSchema, { target: { case: "grant", value: grant } }),
      { metadata },
    );
  return {
    sent,
    ran,
    watch,
    close: async () => {
      client.close();
      await stop();
    },
  };
}

test("every message arrives in order and intact, then OK", async (t) => {
  const s = await open({ ten: { count: 10, chars: 2000 } });
  t.teardown(s.close);
  const got: string[] = [];
  for await (const m of s.watch("ten").messages) {
    got.push(`${m.credential?.generation} ${m.credential?.accessToken.length} ${m.reason}`);
    t.true(m.credential?.accessToken.startsWith(`at-${m.credential?.generation}-`));
  }
  t.deepEqual(
    got,
    Array.from(
      { length: 10 },
      (_, i) => `${i + 1} 2000 ${i === 0 ? RenewalReason.INITIAL : RenewalReason.STORED}`,
    ),
  );
  t.deepEqual(s.ran, ["push no span"]);
});

test("an error end comes after the messages, with its code", async (t) => {
  const s = await open({
    revoked: { count: 3, end: new ConnectError("token revoked", Code.NotFound) },
  });
  t.teardown(s.close);
  const got: bigint[] = [];
  const err = await t.throwsAsync<GrpcCallError>(async () => {
    for await (const m of s.watch("revoked").messages) got.push(m.credential!.generation);
  });
  t.deepEqual(got, [1n, 2n, 3n]);
  t.is(err?.code, grpc.status.NOT_FOUND);
  t.is(err?.details, "token revoked");
});

test("a reader that stops reading gets the newest message next, not the backlog", async (t) => {
  const total = 2000;
  const s = await open({ many: { count: total, chars: 4000 } });
  t.teardown(s.close);
  const w = s.watch("many");
  const got: number[] = [];
  w.call.on("data", (m: WatchTokenResponse) => {
    got.push(Number(m.credential?.generation));
    if (got.length === 1) w.call.pause();
  });
  const ended = new Promise<void>((resolve, reject) => {
    w.call.on("end", resolve);
    w.call.on("error", reject);
  });
  // Paused after the first: the receive window fills and the rest wait at the server.
  const waitUntil = Date.now() + 30_000;
  while ((s.sent.get("many") ?? 0) < total) {
    if (Date.now() > waitUntil) return t.fail(`the server sent ${s.sent.get("many")} of ${total}`);
    await immediate();
  }
  w.call.resume();
  await ended;
  t.is(got.at(-1), total);
  t.true(
    got.every((g, i) => i === 0 || g > got[i - 1]!),
    "generations strictly increase",
  );
  // What the 64 KiB receive window held, then the newest: far fewer than were sent.
  t.true(got.length < total / 4, `${got.length} of ${total} delivered`);
});

/**
 * One traced WatchToken following `script` with telemetry on: on the gRPC
 * listener (the interceptor and its push-stream observer), or on the HTTP one
 * (the interceptor over the push form's iterable): what the client got, that
 * the push form ran, the stream's server span and the duration metric.
 */
async function tracedWatch(script: Script, on: "grpc" | "http", cancelAfterFirst = false) {
  const meter = createTestMeter();
  const telemetry = createRpcTelemetry({
    tracer: tracerProvider.getTracer("test"),
    metrics: createRpcMetrics(meter.meterProvider.getMeter("test")),
  });
  const s = await open(
    { it: script },
    {
      on,
      interceptors: [telemetry.interceptor],
      ...(on === "grpc" ? { pushStreamObserver: telemetry.pushStreamObserver } : {}),
    },
  );
  try {
    const traceId = randomBytes(16).toString("hex");
    const callerSpanId = randomBytes(8).toString("hex");
    const w = s.watch("it", { traceparent: `00-${traceId}-${callerSpanId}-01` });
    const got: bigint[] = [];
    let code = grpc.status.OK;
    try {
      for await (const m of w.messages) {
        got.push(m.credential!.generation);
        if (cancelAfterFirst) w.cancel();
      }
    } catch (err) {
      code = (err as GrpcCallError).code;
    }
    // The server learns of a cancel a little later than the client.
    for (let i = 0; i < 500 && finishedSpans(traceId).length === 0; i++) await immediate();
    const spans = finishedSpans(traceId);
    if (spans.length !== 1) throw new Error(`expected the stream's span, got ${spans.length}`);
    const span = spans[0]!;
    const m = await meter.collect();
    return {
      got,
      code,
      // The form that ran, and whether the server span was active when it started.
      ran: s.ran.map((r) => r.replace(span.spanContext().spanId, "in the server span")),
      span: {
        name: span.name,
        kind: span.kind,
        continuesCaller: span.parentSpanContext?.spanId === callerSpanId,
        attributes: span.attributes,
        status: span.status,
        events: span.events.map((e) => [e.name, e.attributes]),
      },
      durations: points(m, "rpc.server.call.duration").map((p) => p.attributes),
      samples: countOf(m, "rpc.server.call.duration"),
    };
  } finally {
    await s.close();
  }
}

const watchMethod = "tokenvend.v1.TokenService/WatchToken";

for (const [title, script, cancel, expected] of [
  [
    "OK",
    { count: 2 },
    false,
    { code: grpc.status.OK, status: "OK", grpcCode: 0, error: undefined, got: [1n, 2n] },
  ],
  [
    "an expected error end (NOT_FOUND)",
    { count: 2, end: new ConnectError("token revoked", Code.NotFound) },
    false,
    {
      code: grpc.status.NOT_FOUND,
      status: "NOT_FOUND",
      grpcCode: 5,
      error: undefined,
      got: [1n, 2n],
    },
  ],
  [
    "a server fault (UNAVAILABLE)",
    { count: 1, end: new ConnectError("provider unreachable", Code.Unavailable) },
    false,
    {
      code: grpc.status.UNAVAILABLE,
      status: "UNAVAILABLE",
      grpcCode: 14,
      error: "provider unreachable",
      got: [1n],
    },
  ],
  [
    "a client cancel",
    { count: 1, hold: true },
    true,
    { code: grpc.status.CANCELLED, status: "CANCELLED", grpcCode: 1, error: undefined, got: [1n] },
  ],
] as const) {
  test(`with telemetry, the gRPC listener keeps the push form and traces it as the HTTP listener's interceptor traces the same handler: ${title}`, async (t) => {
    const pushed = await tracedWatch(script, "grpc", cancel);
    const adapted = await tracedWatch(script, "http", cancel);
    // The one push form ran on both, in the server span.
    t.deepEqual(pushed.ran, ["push in the server span"]);
    t.deepEqual(adapted.ran, ["push in the server span"]);
    const { ran: _p, ...push } = pushed;
    const { ran: _a, ...interceptor } = adapted;
    t.deepEqual(push, interceptor);
    const statusAttrs = {
      "rpc.system.name": "grpc",
      "rpc.method": watchMethod,
      "rpc.status_code": expected.status,
      ...(expected.error !== undefined ? { "error.type": expected.status } : {}),
    };
    t.deepEqual(push, {
      got: [...expected.got],
      code: expected.code,
      span: {
        name: watchMethod,
        kind: SpanKind.SERVER,
        continuesCaller: true,
        attributes: { ...statusAttrs, "rpc.grpc.status_code": expected.grpcCode },
        status:
          expected.error !== undefined
            ? { code: SpanStatusCode.ERROR, message: expected.error }
            : { code: SpanStatusCode.UNSET },
        events:
          expected.error !== undefined
            ? [
                [
                  "exception",
                  { "exception.type": expected.status, "exception.message": expected.error },
                ],
              ]
            : [],
      },
      durations: [statusAttrs],
      samples: 1,
    });
  });
}

test("a server stream not written with pushStream() is refused when the service is registered", (t) => {
  const impl: Partial<ServiceImpl<typeof TokenService>> = {
    async *watchToken() {
      yield message(1);
    },
  };
  const err = t.throws(() =>
    createGrpcServer({ services: [{ desc: TokenService, impl }], maxReceiveMessageBytes: 1024 }),
  );
  t.is(
    err?.message,
    "tokenvend.v1.TokenService.WatchToken: a server stream on the gRPC listener must be written with pushStream()",
  );
});

test("interceptors without a push-stream observer are refused when a server stream is served", (t) => {
  const err = t.throws(() =>
    createGrpcServer({
      services: [{ desc: TokenService, impl: implFor({}, new Map(), []) }],
      maxReceiveMessageBytes: 1024,
      interceptors: [(next) => next],
    }),
  );
  t.regex(err?.message ?? "", /WatchToken: interceptors do not see push streams/);
  // Without the stream they are fine.
  t.notThrows(() =>
    createGrpcServer({
      services: [{ desc: TokenService, impl: {} }],
      maxReceiveMessageBytes: 1024,
      interceptors: [(next) => next],
    }),
  );
});

test("a server stream left unimplemented answers UNIMPLEMENTED", async (t) => {
  const server = createGrpcServer({
    services: [{ desc: TokenService, impl: {} }],
    maxReceiveMessageBytes: 1024,
  });
  const { port } = await server.listen("127.0.0.1:0");
  const client = createGrpcJsClient(TokenService, `127.0.0.1:${port}`);
  t.teardown(async () => {
    client.close();
    await server.shutdown(100);
  });
  const w = client.stream(
    "WatchToken",
    WatchTokenRequestSchema,
    WatchTokenResponseSchema,
    create(WatchTokenRequestSchema, {}),
  );
  const err = await t.throwsAsync<GrpcCallError>(async () => {
    for await (const _ of w.messages) t.fail("no message");
  });
  t.is(err?.code, grpc.status.UNIMPLEMENTED);
  t.is(err?.details, "tokenvend.v1.TokenService.WatchToken is not implemented");
});
