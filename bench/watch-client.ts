// The client process of `npm run bench:watch`: holds every WatchToken stream on
// a few grpc-js channels (each its own HTTP/2 connection) with the protobuf-es
// serializers, triggers renewals with StoreUpstreamTokens on a channel of its
// own, and times each stream's receipt of each new generation from just before
// the StoreUpstreamTokens call was sent (one process, one clock).
//
// Driven over IPC by bench/watch.ts: {cmd: "open"}, {cmd: "renew", count},
// {cmd: "close"}; each command is answered with one message, after a first
// ReadyReply. tools/goclient (`tokenvend-goclient watch`, BENCH_CLIENT=go) is the
// same client in Go and speaks the same messages as JSON lines on stdin/stdout.

import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  RenewalReason,
  type StoreUpstreamTokensRequest,
  StoreUpstreamTokensRequestSchema,
  StoreUpstreamTokensResponseSchema,
  TokenService,
  WatchTokenRequestSchema,
  type WatchTokenResponse,
  WatchTokenResponseSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";

export interface ClientSettings {
  readonly address: string;
  readonly streams: number;
  readonly channels: number;
  readonly batch: number;
  readonly tokenChars: number;
  readonly sessionId: string;
  readonly provider: string;
  readonly deliveryTimeoutMs: number;
  readonly pauseMs: number;
  /** grpc-node.flow_control_window: the client's HTTP/2 receive window (grpc-js default 65535). */
  readonly flowWindow?: number;
}

export type ClientCommand =
  | { readonly cmd: "open" }
  | { readonly cmd: "renew"; readonly count: number }
  | { readonly cmd: "close" };

export interface OpenReply {
  readonly reply: "open";
  readonly opened: number;
  readonly failed: number;
  readonly rampMs: number;
  readonly messageBytes: number;
  readonly errors: Record<string, number>;
}

export interface RenewalResult {
  readonly generation: number;
  /** Streams that got this generation, and how long each took (ms, NaN: never). */
  readonly delivered: number;
  readonly latenciesMs: number[];
  /** StoreUpstreamTokens' own round trip. */
  readonly ackMs: number;
}

export interface RenewReply {
  readonly reply: "renew";
  readonly renewals: RenewalResult[];
  /** Streams alive at the start that got every generation of this command. */
  readonly gotEvery: number;
  /** Streams that jumped over a generation (latest-value delivery). */
  readonly skipped: number;
  readonly errors: Record<string, number>;
  readonly clientCpuMs: number;
}

export interface CloseReply {
  readonly reply: "close";
  /** Streams that ended on their own, with a status other than our own cancel. */
  readonly errors: Record<string, number>;
}

export type ClientReply = OpenReply | RenewReply | CloseReply;

/** The first message of a client: it is ready for commands. */
export interface ReadyReply {
  readonly reply: "ready";
  /** Which gRPC library and receive windows, for the report. */
  readonly client: string;
}

const path = (method: string) => `/${TokenService.typeName}/${method}`;
const ser =
  <D extends DescMessage>(desc: D) =>
  (m: MessageShape<D>) =>
    Buffer.from(toBinary(desc, m));
const de =
  <D extends DescMessage>(desc: D) =>
  (b: Buffer) =>
    fromBinary(desc, b);

/** A random token of `chars` base64url characters (JWT-like size, no meaning). */
const token = (chars: number) =>
  randomBytes(Math.ceil((chars * 3) / 4))
    .toString("base64url")
    .slice(0, chars);

export async function runClient(s: ClientSettings, send: (r: ClientReply) => void) {
  // Distinct local subchannel pools: each client gets its own connection.
  const channelOptions: grpc.ChannelOptions = {
    "grpc.use_local_subchannel_pool": 1,
    ...(s.flowWindow !== undefined ? { "grpc-node.flow_control_window": s.flowWindow } : {}),
  };
  const insecure = grpc.credentials.createInsecure();
  const channels = Array.from(
    { length: s.channels },
    () => new grpc.Client(s.address, insecure, channelOptions),
  );
  // Renewals go out on their own connection, not queued behind stream data.
  const control = new grpc.Client(s.address, insecure, channelOptions);
  const idToken = token(s.tokenChars);

  const store = (generationHint: number) =>
    new Promise<bigint>((resolve, reject) => {
      const req: StoreUpstreamTokensRequest = create(StoreUpstreamTokensRequestSchema, {
        sessionId: s.sessionId,
        provider: s.provider,
        accessToken: `${generationHint}.${token(s.tokenChars)}`.slice(0, s.tokenChars),
        refreshToken: token(64),
        idToken,
        expiry: { case: "expiresIn", value: 3600n },
        scopes: ["openid", "profile", "email"],
        subject: "bench-user",
        clientId: "bench-client",
      });
      control.makeUnaryRequest(
        path("StoreUpstreamTokens"),
        ser(StoreUpstreamTokensRequestSchema),
        de(StoreUpstreamTokensResponseSchema),
        req,
        (err, res) => (err ? reject(err) : resolve(res!.generation)),
      );
    });

  const n = s.streams;
  const calls: grpc.ClientReadableStream<WatchTokenResponse>[] = [];
  const lastGen = new Float64Array(n);
  const opened = new Uint8Array(n);
  const skipped = new Uint8Array(n);
  const ended = new Uint8Array(n);
  const errors: Record<string, number> = {};
  let messageBytes = 0;
  let cancelling = false;
  let onOpened: (() => void) | undefined;
  let openedCount = 0;
  /** Streams that opened, or ended before they could. */
  let settled = 0;
  let latest = 0;

  interface Pending {
    readonly t0: number;
    readonly lat: Float64Array;
    got: number;
    expected: number;
    done: () => void;
  }
  const pending = new Map<number, Pending>();

  const watchReq = create(WatchTokenRequestSchema, {
    target: { case: "session", value: { sessionId: s.sessionId, provider: s.provider } },
  });
  const decode = de(WatchTokenResponseSchema);
  const deserialize = (b: Buffer) => {
    messageBytes = b.byteLength;
    return decode(b);
  };
  const serialize = ser(WatchTokenRequestSchema);

  const openOne = (i: number) => {
    const ch = channels[i % channels.length]!;
    const call = ch.makeServerStreamRequest(
      path("WatchToken"),
      serialize,
      deserialize,
      watchReq,
    ) as grpc.ClientReadableStream<WatchTokenResponse>;
    calls[i] = call;
    call.on("data", (m: WatchTokenResponse) => {
      const now = performance.now();
      const g = Number(m.credential?.generation ?? 0n);
      if (m.reason === RenewalReason.INITIAL) {
        lastGen[i] = g;
        if (opened[i] === 0) {
          opened[i] = 1;
          openedCount++;
          settled++;
          onOpened?.();
        }
        return;
      }
      if (g > lastGen[i]! + 1) skipped[i] = 1;
      lastGen[i] = g;
      const p = pending.get(g);
      if (p !== undefined && Number.isNaN(p.lat[i]!)) {
        p.lat[i] = now - p.t0;
        p.got++;
        if (p.got >= p.expected) p.done();
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (ended[i] === 1) return;
      ended[i] = 1;
      if (cancelling && err.code === grpc.status.CANCELLED) return;
      const k = `${grpc.status[err.code] ?? err.code}: ${err.details}`;
      errors[k] = (errors[k] ?? 0) + 1;
      // A stream that ends before it opened still lets the ramp go on.
      if (opened[i] === 0) {
        settled++;
        onOpened?.();
      }
      // One that ends mid-renewal is no longer expected.
      for (const p of pending.values()) {
        if (Number.isNaN(p.lat[i]!)) {
          p.expected--;
          if (p.got >= p.expected) p.done();
        }
      }
    });
    call.on("end", () => {
      if (ended[i] === 1) return;
      ended[i] = 1;
      if (!cancelling) errors["ended without status"] = (errors["ended without status"] ?? 0) + 1;
    });
  };

  const open = async (): Promise<OpenReply> => {
    latest = Number(await store(1));
    const start = performance.now();
    for (let from = 0; from < n; from += s.batch) {
      const to = Math.min(n, from + s.batch);
      const { promise, resolve } = Promise.withResolvers<void>();
      onOpened = () => {
        if (settled >= to) resolve();
      };
      for (let i = from; i < to; i++) openOne(i);
      onOpened();
      await promise;
    }
    onOpened = undefined;
    return {
      reply: "open",
      opened: openedCount,
      failed: n - openedCount,
      rampMs: performance.now() - start,
      messageBytes,
      errors: { ...errors },
    };
  };

  const renew = async (count: number): Promise<RenewReply> => {
    const cpu0 = process.cpuUsage();
    const alive: number[] = [];
    for (let i = 0; i < n; i++) if (opened[i] === 1 && ended[i] === 0) alive.push(i);
    skipped.fill(0);
    const renewals: RenewalResult[] = [];
    const gens: Pending[] = [];
    for (let r = 0; r < count; r++) {
      const generation = latest + 1;
      const { promise, resolve } = Promise.withResolvers<void>();
      const p: Pending = {
        t0: 0,
        lat: new Float64Array(n).fill(Number.NaN),
        got: 0,
        expected: alive.filter((i) => ended[i] === 0).length,
        done: resolve,
      };
      const timeout = setTimeout(resolve, s.deliveryTimeoutMs);
      (p as { t0: number }).t0 = performance.now();
      pending.set(generation, p);
      const stored = await store(generation);
      const ackMs = performance.now() - p.t0;
      latest = Number(stored);
      if (latest !== generation) {
        throw new Error(`stored generation ${stored}, expected ${generation}`);
      }
      await promise;
      clearTimeout(timeout);
      pending.delete(generation);
      gens.push(p);
      renewals.push({
        generation,
        delivered: p.got,
        latenciesMs: Array.from(p.lat).filter((x) => !Number.isNaN(x)),
        ackMs,
      });
      // Let the server settle (GC, socket buffers) so renewals are independent.
      await new Promise((r) => setTimeout(r, s.pauseMs));
    }
    let gotEvery = 0;
    for (const i of alive) if (gens.every((p) => !Number.isNaN(p.lat[i]!))) gotEvery++;
    const cpu = process.cpuUsage(cpu0);
    return {
      reply: "renew",
      renewals,
      gotEvery,
      skipped: skipped.reduce((a, b) => a + b, 0),
      errors: { ...errors },
      clientCpuMs: (cpu.user + cpu.system) / 1000,
    };
  };

  const close = async (): Promise<CloseReply> => {
    cancelling = true;
    for (const c of calls) c.cancel();
    // Let the cancellations reach the server before the connections go.
    await new Promise((r) => setTimeout(r, 500));
    for (const ch of channels) ch.close();
    control.close();
    return { reply: "close", errors: { ...errors } };
  };

  process.on("message", (c: ClientCommand) => {
    const run = c.cmd === "open" ? open() : c.cmd === "renew" ? renew(c.count) : close();
    run.then(send, (err: unknown) => {
      process.stderr.write(`watch client: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    });
  });
}

if (process.send !== undefined && process.env.BENCH_WATCH_CLIENT !== undefined) {
  const settings = JSON.parse(process.env.BENCH_WATCH_CLIENT) as ClientSettings;
  // Exits when bench/watch.ts lets go of it (after "close", or when it failed).
  process.on("disconnect", () => process.exit(0));
  const send = process.send.bind(process);
  await runClient(settings, (r) => send(r));
  const grpcJs = createRequire(import.meta.url)("@grpc/grpc-js/package.json") as {
    version: string;
  };
  send({
    reply: "ready",
    client: `grpc-js ${grpcJs.version}, receive windows ${settings.flowWindow ?? 65535} B (connection and stream)`,
  } satisfies ReadyReply);
}
