// `npm run bench:watch`: WatchToken at scale. One tokenvend replica (memory
// store, its own child process so its memory is measured alone) serves 10,000
// WatchToken streams of one session, all held by one client process on a few
// HTTP/2 connections: by default the Go client (tools/goclient, grpc-go, built
// and cached by scripts/tools.ts), or with BENCH_CLIENT=node bench/watch-client.ts
// (grpc-js with the protobuf-es serializers), which spends ~35 µs of CPU per
// stream message and so, at 10,000 streams, bounds the latency it measures.
// Both take the same commands and give the same replies. The client stores a
// new generation with StoreUpstreamTokens (reason STORED), which pushes to
// every subscriber of the key, and times each stream's receipt from just
// before that call. Server RSS is read from /proc/<pid>/status before the
// streams, with them open, and after the renewals.
//
// Target (issue "WatchToken at scale"): a renewal reaches all 10,000 streams
// within 150 ms at p99, with the replica under 250 MB resident.
//
// Options (env): BENCH_STREAMS (10000), BENCH_CHANNELS (8), BENCH_BATCH (500
// streams opened at a time), BENCH_RENEWALS (30, after BENCH_WARMUP=1 untimed),
// BENCH_TOKEN_CHARS (1024: access and id token size), BENCH_PAUSE_MS (1000
// between renewals), BENCH_CPU_PROF=<dir> (V8 CPU profiles of the server and, in
// <dir>/client, of the client, with the phases' times on the profile clock),
// BENCH_SERVER_NODE_ARGS (the server's node flags; default: the V8 heap flags
// of package.json's `start` script, so the replica runs as `npm start` runs
// it), BENCH_CLIENT=go|node (go), BENCH_FLOW_WINDOW (the
// client's HTTP/2 receive windows, connection and stream; default grpc-js 65535
// bytes, the Go client 64 MiB per connection and 1 MiB per stream, so the
// server never waits for a WINDOW_UPDATE), BENCH_SERVER=naive|floor (a plain
// grpc-js server instead of tokenvend, to compare: see startNaive),
// BENCH_TELEMETRY=1 (tokenvend with telemetry on, as under OTEL_*: a server
// span per stream and a push span per message, exported nowhere). With
// BENCH_CPU_PROF the Go client writes <dir>/client/go-client.pprof.

import { type ChildProcess, fork, spawn } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type * as grpcJs from "@grpc/grpc-js";
import type {
  Credential,
  StoreUpstreamTokensRequest,
  StoreUpstreamTokensResponse,
  WatchTokenRequest,
  WatchTokenResponse,
} from "../gen/tokenvend/v1/token_service_pb.js";
import type {
  ClientCommand,
  ClientReply,
  ClientSettings,
  CloseReply,
  OpenReply,
  ReadyReply,
  RenewReply,
} from "./watch-client.ts";

const env = process.env;
const streams = Number(env.BENCH_STREAMS ?? "10000");
const channels = Number(env.BENCH_CHANNELS ?? "8");
const batch = Number(env.BENCH_BATCH ?? "500");
const renewals = Number(env.BENCH_RENEWALS ?? "30");
const warmup = Number(env.BENCH_WARMUP ?? "1");
const tokenChars = Number(env.BENCH_TOKEN_CHARS ?? "1024");
const pauseMs = Number(env.BENCH_PAUSE_MS ?? "1000");
const cpuProfDir = env.BENCH_CPU_PROF;
/** The V8 heap flags `npm start` gives the service (package.json), e.g. `--max-semi-space-size=4`. */
function serviceHeapFlags(): string[] {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    scripts: { start: string };
  };
  return pkg.scripts.start.split(/\s+/).filter((a) => /^--max-(semi|old)-space-size=\d+$/.test(a));
}
const serverNodeArgs =
  env.BENCH_SERVER_NODE_ARGS !== undefined
    ? env.BENCH_SERVER_NODE_ARGS.split(/\s+/).filter(Boolean)
    : serviceHeapFlags();
const serverKind =
  env.BENCH_SERVER === "naive" || env.BENCH_SERVER === "floor" ? env.BENCH_SERVER : "tokenvend";
const flowWindow = env.BENCH_FLOW_WINDOW !== undefined ? Number(env.BENCH_FLOW_WINDOW) : undefined;
const clientKind = env.BENCH_CLIENT ?? "go";
if (clientKind !== "go" && clientKind !== "node") {
  throw new Error(`BENCH_CLIENT=${clientKind}: must be go or node`);
}
const targetP99Ms = 150;
const targetRssMB = 250;
const provider = "bench";

interface ServerSample {
  readonly reply: "sample";
  readonly memory: NodeJS.MemoryUsage;
  readonly stats: { streams: number; watchers: number; timers: number };
  readonly cpuMs: number;
  /** process.hrtime in µs: the clock of V8's CPU profiles, to cut a profile into phases. */
  readonly monoUs: number;
}

// ---------------------------------------------------------------------------
// The server role: one replica, memory store, a provider that is never called
// (tokens live an hour, so no background refresh runs during the bench).

interface BenchServer {
  readonly port: number;
  stats(): { streams: number; watchers: number; timers: number };
  shutdown(): Promise<void>;
}

async function startTokenvend(): Promise<BenchServer> {
  const { parseConfig } = await import("../src/config.ts");
  const { startServer } = await import("../src/server.ts");
  const config = parseConfig(
    {
      grpc: { listen: "127.0.0.1:0" },
      http: { listen: "127.0.0.1:0" },
      logLevel: "silent",
      maxStreams: Math.max(streams, 10_000),
      // One client opens every stream: the per-caller limits are not what this measures.
      limits: { callers: { disabled: true } },
      shutdownGrace: "2s",
      providers: {
        [provider]: {
          tokenEndpoint: "http://127.0.0.1:9/token",
          clientId: "bench-client",
          authMethod: "none",
        },
      },
    },
    { env: {}, readFile: () => "" },
  );
  const telemetry =
    env.BENCH_TELEMETRY === "1"
      ? await (await import("./telemetry.ts")).benchTelemetry()
      : undefined;
  const server = await startServer({ config, ...(telemetry !== undefined ? { telemetry } : {}) });
  return {
    port: server.grpcPort,
    stats: () => {
      const s = server.vendor.stats();
      return { streams: s.streams, watchers: s.watchers, timers: s.timers };
    },
    shutdown: () => server.shutdown(),
  };
}

/**
 * BENCH_SERVER=naive: the issue's point of comparison, a plain grpc-js server
 * with the same two methods that keeps its streams in a Set and writes each
 * renewal to each of them, serializing it once per stream.
 * BENCH_SERVER=floor: the same, but the renewal is encoded once and the same
 * bytes written to every stream: about the least a grpc-js server can do per
 * stream, so what is left is mostly the client's own cost.
 */
async function startNaive(): Promise<BenchServer> {
  const grpc = await import("@grpc/grpc-js");
  const { create, fromBinary, toBinary } = await import("@bufbuild/protobuf");
  const { timestampFromMs } = await import("@bufbuild/protobuf/wkt");
  const pb = await import("../gen/tokenvend/v1/token_service_pb.js");
  const calls = new Set<
    grpcJs.ServerWritableStream<WatchTokenRequest, WatchTokenResponse | Buffer>
  >();
  const encodeOnce = serverKind === "floor";
  let current: Credential | undefined;
  let generation = 0n;
  const server = new grpc.Server();
  const svc = `/${pb.TokenService.typeName}`;
  server.addService(
    {
      StoreUpstreamTokens: {
        path: `${svc}/StoreUpstreamTokens`,
        requestStream: false,
        responseStream: false,
        requestSerialize: (m: StoreUpstreamTokensRequest) =>
          Buffer.from(toBinary(pb.StoreUpstreamTokensRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(pb.StoreUpstreamTokensRequestSchema, b),
        responseSerialize: (m: StoreUpstreamTokensResponse) =>
          Buffer.from(toBinary(pb.StoreUpstreamTokensResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(pb.StoreUpstreamTokensResponseSchema, b),
      },
      WatchToken: {
        path: `${svc}/WatchToken`,
        requestStream: false,
        responseStream: true,
        requestSerialize: (m: WatchTokenRequest) =>
          Buffer.from(toBinary(pb.WatchTokenRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(pb.WatchTokenRequestSchema, b),
        responseSerialize: (m: WatchTokenResponse | Buffer) =>
          Buffer.isBuffer(m) ? m : Buffer.from(toBinary(pb.WatchTokenResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(pb.WatchTokenResponseSchema, b),
      },
    },
    {
      StoreUpstreamTokens: (
        call: grpcJs.ServerUnaryCall<StoreUpstreamTokensRequest, StoreUpstreamTokensResponse>,
        cb: grpcJs.sendUnaryData<StoreUpstreamTokensResponse>,
      ) => {
        const r = call.request;
        generation++;
        current = create(pb.CredentialSchema, {
          accessToken: r.accessToken,
          idToken: r.idToken,
          tokenType: "Bearer",
          expiresAt: timestampFromMs(Date.now() + 3_600_000),
          scopes: r.scopes,
          generation,
        });
        const msg = create(pb.WatchTokenResponseSchema, {
          credential: current,
          reason: pb.RenewalReason.STORED,
        });
        const out = encodeOnce ? Buffer.from(toBinary(pb.WatchTokenResponseSchema, msg)) : msg;
        for (const c of calls) c.write(out);
        cb(null, create(pb.StoreUpstreamTokensResponseSchema, { generation }));
      },
      WatchToken: (
        call: grpcJs.ServerWritableStream<WatchTokenRequest, WatchTokenResponse | Buffer>,
      ) => {
        calls.add(call);
        call.on("cancelled", () => calls.delete(call));
        call.write(
          create(pb.WatchTokenResponseSchema, {
            credential: current,
            reason: pb.RenewalReason.INITIAL,
          }),
        );
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    port,
    stats: () => ({ streams: calls.size, watchers: calls.size > 0 ? 1 : 0, timers: 0 }),
    shutdown: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

async function serve() {
  // The orchestrator went away (it failed, or was killed): do not linger.
  process.on("disconnect", () => process.exit(1));
  const server = serverKind === "tokenvend" ? await startTokenvend() : await startNaive();
  const send = process.send!.bind(process);
  process.on("message", (m: { cmd: "sample" | "shutdown" }) => {
    if (m.cmd === "sample") {
      const cpu = process.cpuUsage();
      send({
        reply: "sample",
        memory: process.memoryUsage(),
        stats: server.stats(),
        cpuMs: (cpu.user + cpu.system) / 1000,
        monoUs: Number(process.hrtime.bigint() / 1000n),
      } satisfies ServerSample);
    } else {
      void server.shutdown().then(() => process.exit(0));
    }
  });
  send({ reply: "ready", port: server.port });
}

// ---------------------------------------------------------------------------
// The orchestrator.

/**
 * One request/reply at a time with a child: over its IPC channel, or as JSON
 * lines on its stdin and stdout (the Go client).
 */
function rpcTo<Reply>(child: ChildProcess, over: "ipc" | "stdio" = "ipc") {
  const replies: ((m: unknown) => void)[] = [];
  const onReply = (m: unknown) => replies.shift()?.(m);
  let send: (msg: object) => void;
  if (over === "ipc") {
    child.on("message", onReply);
    send = (msg) => child.send(msg);
  } else {
    createInterface({ input: child.stdout! }).on("line", (line) => onReply(JSON.parse(line)));
    send = (msg) => child.stdin!.write(`${JSON.stringify(msg)}\n`);
  }
  return <R extends Reply>(msg: object | undefined): Promise<R> =>
    new Promise((resolve, reject) => {
      const onExit = (code: number | null) =>
        reject(new Error(`${child.spawnargs.join(" ")} exited with ${code}`));
      child.once("exit", onExit);
      replies.push((m) => {
        child.off("exit", onExit);
        resolve(m as R);
      });
      if (msg !== undefined) send(msg);
    });
}

/** VmRSS and VmHWM of a process, in bytes. */
function procMemory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
  return { rss: kb("VmRSS") * 1024, hwm: kb("VmHWM") * 1024 };
}

/** CPU time all processes used so far (/proc/stat: user+nice+system+irq+softirq+steal), ms. */
function machineBusyMs(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).map(Number);
  const ticks = (f[1] ?? 0) + (f[2] ?? 0) + (f[3] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0) + (f[8] ?? 0);
  return (ticks * 1000) / 100; // USER_HZ
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

async function orchestrate() {
  // Other work on these two cores skews every number: say how busy they were.
  const loadAtStart = loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");
  const self = fileURLToPath(import.meta.url);
  const server = fork(self, [], {
    env: { ...env, BENCH_WATCH_ROLE: "server" },
    execArgv: [
      ...serverNodeArgs,
      ...(cpuProfDir !== undefined ? ["--cpu-prof", "--cpu-prof-dir", cpuProfDir] : []),
    ],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const serverExit = new Promise((r) => server.once("exit", r));
  const toServer = rpcTo<{ reply: "ready"; port: number } | ServerSample>(server);
  const { port } = await toServer<{ reply: "ready"; port: number }>(undefined);
  const sample = async () => {
    const s = await toServer<ServerSample>({ cmd: "sample" });
    return { ...s, ...procMemory(server.pid!) };
  };

  const settings: ClientSettings = {
    address: `127.0.0.1:${port}`,
    streams,
    channels,
    batch,
    tokenChars,
    sessionId: "bench-session",
    provider,
    deliveryTimeoutMs: 30_000,
    pauseMs,
    ...(flowWindow !== undefined ? { flowWindow } : {}),
  };
  const client = await startClient(settings);
  const clientExit = new Promise((r) => client.once("exit", r));
  const toClient = rpcTo<ClientReply | ReadyReply>(client, clientKind === "go" ? "stdio" : "ipc");
  const { client: clientInfo } = await toClient<ReadyReply>(undefined);
  const command = <R extends ClientReply>(c: ClientCommand) => toClient<R>(c);

  await sleep(500);
  const before = await sample();
  const open = await command<OpenReply>({ cmd: "open" });
  await sleep(1000);
  const withStreams = await sample();
  const clientWithStreams = procMemory(client.pid!);
  const warm = warmup > 0 ? await command<RenewReply>({ cmd: "renew", count: warmup }) : undefined;
  const cpu0 = await sample();
  const busy0 = machineBusyMs();
  const self0 = process.cpuUsage();
  const timed = await command<RenewReply>({ cmd: "renew", count: renewals });
  const after = await sample();
  const clientAfter = procMemory(client.pid!);
  const selfCpu = process.cpuUsage(self0);
  // CPU the rest of the machine used meanwhile: other work on the same two cores.
  const othersMs =
    machineBusyMs() -
    busy0 -
    (after.cpuMs - cpu0.cpuMs) -
    timed.clientCpuMs -
    (selfCpu.user + selfCpu.system) / 1000;
  const close = await command<CloseReply>({ cmd: "close" });
  // Lets go of the client: it exits.
  if (clientKind === "go") client.stdin!.end();
  else client.disconnect();
  // Every stream and watcher must be gone once the client cancelled.
  let drained = await sample();
  for (let i = 0; i < 50 && drained.stats.streams + drained.stats.watchers > 0; i++) {
    await sleep(100);
    drained = await sample();
  }
  server.send({ cmd: "shutdown" });
  await Promise.all([serverExit, clientExit]);

  // --- report
  const all = timed.renewals.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
  const expected = open.opened * timed.renewals.length;
  const allDelivered = timed.renewals.map((r) => Math.max(...r.latenciesMs)).sort((a, b) => a - b);
  const mb = (b: number) => (b / 1e6).toFixed(0);
  const ms = (x: number) => x.toFixed(1);
  const heap = (x: ServerSample) =>
    `heap ${mb(x.memory.heapUsed)} of ${mb(x.memory.heapTotal)} MB, external ${mb(x.memory.external)} MB`;
  const p50 = percentile(all, 50);
  const p99 = percentile(all, 99);
  const serverCpuPerRenewal = (after.cpuMs - cpu0.cpuMs) / Math.max(1, timed.renewals.length);
  const messageKB = (open.messageBytes / 1000).toFixed(1);
  const lines = [
    `date: ${new Date().toISOString()}`,
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}; load average at start ${loadAtStart}`,
    `command: ${env.BENCH_TELEMETRY === "1" ? "BENCH_TELEMETRY=1 " : ""}${serverKind !== "tokenvend" ? `BENCH_SERVER=${serverKind} ` : ""}BENCH_CLIENT=${clientKind} ${env.BENCH_SERVER_NODE_ARGS !== undefined ? `BENCH_SERVER_NODE_ARGS="${serverNodeArgs.join(" ")}" ` : ""}${flowWindow !== undefined ? `BENCH_FLOW_WINDOW=${flowWindow} ` : ""}npm run bench:watch (${serverKind !== "tokenvend" ? `${serverKind} grpc-js server, not tokenvend; ` : ""}${streams} WatchToken streams of one session in one ${clientKind === "go" ? "Go" : "Node"} client process on ${channels} HTTP/2 connections, opened in batches of ${batch}; ${renewals} StoreUpstreamTokens renewals after ${warmup} untimed, ${pauseMs} ms apart; ${messageKB} KB stream message)`,
    `server: node ${[...serverNodeArgs, "…"].join(" ")}${env.BENCH_SERVER_NODE_ARGS === undefined ? " (the heap flags of npm start)" : ""}`,
    `client: ${clientKind === "go" ? "tools/goclient" : "bench/watch-client.ts"} (${clientInfo})`,
    "",
    "| measure | measured | target |",
    "| --- | ---: | ---: |",
    `| streams open | ${open.opened} / ${streams} (ramp ${(open.rampMs / 1000).toFixed(1)} s) | ${streams} |`,
    `| renewal → stream, p50 | ${ms(p50)} ms | |`,
    `| renewal → stream, p99 | ${ms(p99)} ms | ≤ ${targetP99Ms} ms |`,
    `| renewal → stream, max | ${ms(all.at(-1) ?? Number.NaN)} ms | |`,
    `| renewal → last stream, median / worst renewal | ${ms(percentile(allDelivered, 50))} / ${ms(allDelivered.at(-1) ?? Number.NaN)} ms | |`,
    `| deliveries | ${all.length} / ${expected} | ${expected} |`,
    `| streams that got every generation | ${timed.gotEvery} / ${open.opened} (${timed.skipped} skipped one) | ${open.opened} |`,
    `| StoreUpstreamTokens round trip, median | ${ms(
      percentile(
        timed.renewals.map((r) => r.ackMs).sort((a, b) => a - b),
        50,
      ),
    )} ms | |`,
    `| server RSS before streams | ${mb(before.rss)} MB (${heap(before)}) | |`,
    `| server RSS with ${open.opened} streams | ${mb(withStreams.rss)} MB (${heap(withStreams)}) | < ${targetRssMB} MB |`,
    `| server RSS after renewals | ${mb(after.rss)} MB (${heap(after)}; peak RSS ${mb(after.hwm)} MB) | < ${targetRssMB} MB |`,
    `| other processes' CPU during the timed renewals | ${(othersMs / 1000).toFixed(1)} s of ${((after.monoUs - cpu0.monoUs) / 1e6).toFixed(1)} s wall (2 cores) | ~0 |`,
    `| server CPU per renewal | ${ms(serverCpuPerRenewal)} ms (${((serverCpuPerRenewal * 1000) / Math.max(1, open.opened)).toFixed(1)} µs/stream) | |`,
    `| client CPU per renewal | ${ms(timed.clientCpuMs / Math.max(1, timed.renewals.length))} ms (client RSS ${mb(clientWithStreams.rss)} MB with streams, peak ${mb(clientAfter.hwm)} MB) | |`,
    `| server streams / watchers after cancel | ${drained.stats.streams} / ${drained.stats.watchers} | 0 / 0 |`,
    "",
    "| renewal | delivered | first ms | p50 ms | p99 ms | last ms | store ack ms |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...[...(warm?.renewals.map((r) => ({ ...r, warm: true })) ?? []), ...timed.renewals].map(
      (r) => {
        const s = [...r.latenciesMs].sort((a, b) => a - b);
        const label = "warm" in r ? `${r.generation} (warm-up)` : `${r.generation}`;
        return `| ${label} | ${r.delivered} | ${ms(s[0] ?? Number.NaN)} | ${ms(percentile(s, 50))} | ${ms(percentile(s, 99))} | ${ms(s.at(-1) ?? Number.NaN)} | ${ms(r.ackMs)} |`;
      },
    ),
    "",
    `p99 ${ms(p99)} ms (target ≤ ${targetP99Ms}), RSS with streams ${mb(withStreams.rss)} MB, after renewals ${mb(after.rss)} MB (target < ${targetRssMB})${p99 <= targetP99Ms && Math.max(withStreams.rss, after.rss) < targetRssMB * 1e6 ? ": target met" : ": target MISSED"}`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);

  const problems: string[] = [];
  const errs = { ...open.errors, ...timed.errors, ...close.errors };
  if (open.failed > 0) problems.push(`${open.failed} streams did not open`);
  if (Object.keys(errs).length > 0) problems.push(`stream errors: ${JSON.stringify(errs)}`);
  if (all.length < expected) problems.push(`${expected - all.length} deliveries missing`);
  if (drained.stats.streams + drained.stats.watchers > 0) {
    problems.push(`server still holds ${drained.stats.streams} streams after cancel`);
  }
  for (const p of problems) process.stderr.write(`FAIL: ${p}\n`);
  if (problems.length > 0) process.exitCode = 1;
  if (cpuProfDir !== undefined) {
    process.stderr.write(
      `CPU profiles in ${cpuProfDir} (server, pid ${server.pid}) and ${cpuProfDir}/client; phases (profile clock, µs): ramp ${before.monoUs}-${withStreams.monoUs}, timed renewals ${cpu0.monoUs}-${after.monoUs}\n`,
    );
  }
}

/** The client process, ready for commands once it sends its ReadyReply. */
async function startClient(settings: ClientSettings): Promise<ChildProcess> {
  const clientEnv = { ...env, BENCH_WATCH_CLIENT: JSON.stringify(settings) };
  const profDir = cpuProfDir !== undefined ? `${cpuProfDir}/client` : undefined;
  if (clientKind === "node") {
    return fork(fileURLToPath(new URL("./watch-client.ts", import.meta.url)), [], {
      env: clientEnv,
      execArgv: profDir !== undefined ? ["--cpu-prof", "--cpu-prof-dir", profDir] : [],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
  }
  const { ensureGoClient } = await import("../scripts/tools.ts");
  const bin = await ensureGoClient();
  if (profDir !== undefined) mkdirSync(profDir, { recursive: true });
  return spawn(
    bin,
    ["watch", ...(profDir !== undefined ? ["-cpuprofile", `${profDir}/go-client.pprof`] : [])],
    { env: clientEnv, stdio: ["pipe", "pipe", "inherit"] },
  );
}

if (env.BENCH_WATCH_ROLE === "server") await serve();
else await orchestrate();
