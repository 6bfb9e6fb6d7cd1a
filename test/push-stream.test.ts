// Push streams on the gRPC listener (src/rpc/push-stream.ts, GrpcSink): what a
// handler sends arrives in order and intact, a reader that stops reading gets
// the newest message rather than a backlog, the end status follows the last
// message, and the direct write path (one shared frame per message, written
// straight to the HTTP/2 stream) still finds the grpc-js internals it needs.

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import test from "ava";
import {
  RenewalReason,
  TokenService,
  WatchTokenRequestSchema,
  type WatchTokenResponse,
  WatchTokenResponseSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { freeze } from "../src/rpc/frozen-message.ts";
import { createGrpcServer, directStreamOf } from "../src/rpc/grpc-server.ts";
import { type StreamSink, withPushStream } from "../src/rpc/push-stream.ts";
import { createGrpcJsClient, type GrpcCallError } from "./support/grpc-client.ts";

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
}

/** A WatchToken whose push form follows the script named by the request's grant. */
function serverFor(scripts: Record<string, Script>, sent: Map<string, number>) {
  const push = (
    req: { target: { case?: string; value?: unknown } },
    _ctx: unknown,
    sink: StreamSink<WatchTokenResponse>,
  ) => {
    const name = String(req.target.value);
    const s = scripts[name]!;
    void (async () => {
      for (let g = 1; g <= s.count; g++) {
        sink.send(message(g, s.chars));
        sent.set(name, g);
        await immediate();
      }
      sink.end(s.end);
    })();
  };
  const impl: Partial<ServiceImpl<typeof TokenService>> = {
    watchToken: withPushStream(async function* watchToken() {
      yield* [];
      throw new ConnectError("only the push form is mounted here", Code.Internal);
    }, push),
  };
  return createGrpcServer({ services: [{ desc: TokenService, impl }] });
}

async function open(scripts: Record<string, Script>) {
  const sent = new Map<string, number>();
  const server = serverFor(scripts, sent);
  const { port } = await server.listen("127.0.0.1:0");
  const client = createGrpcJsClient(TokenService, `127.0.0.1:${port}`);
  const watch = (grant: string) =>
    client.stream(
      "WatchToken",
      WatchTokenRequestSchema,
      WatchTokenResponseSchema,
      create(WatchTokenRequestSchema, { target: { case: "grant", value: grant } }),
    );
  return {
    sent,
    watch,
    close: async () => {
      client.close();
      await server.shutdown(100);
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
  while ((s.sent.get("many") ?? 0) < total) await immediate();
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

test("the direct write path still finds grpc-js's call.stream and metadataSent", async (t) => {
  const server = new grpc.Server();
  const seen: string[] = [];
  const definition = {
    Stream: {
      path: "/test.Push/Stream",
      requestStream: false,
      responseStream: true,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
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
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  t.teardown(() => server.forceShutdown());
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const call = client.makeServerStreamRequest(
    "/test.Push/Stream",
    (b: Buffer) => b,
    (b: Buffer) => b,
    Buffer.alloc(0),
  );
  const got: string[] = [];
  for await (const b of call as AsyncIterable<Buffer>) got.push(b.toString());
  t.deepEqual(seen, ["before headers: none", "after headers: stream"]);
  // The frame written straight to the HTTP/2 stream reaches the client as a message.
  t.deepEqual(got, ["a", "b"]);
});
