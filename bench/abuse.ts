// `npm run bench:abuse`: one replica, a well-behaved caller and, at the same time, abusive ones.
// Three processes so each is measured alone: the replica (memory store, run with `npm start`'s
// heap flags), the abusers (bench/abuse-client.ts) and this one, which runs the provider's token
// endpoint (a counting stub: tokens of 1.7 KB that live an hour, rotated refresh tokens), the
// well-behaved caller and the measurements:
//
//   - the replica's RSS every 250 ms over the run, against the memory budget: the config's
//     `limits` section when the build has one (its memory budget), else the pod's memory limit
//     in k8s/deployment.yaml;
//   - the well-behaved caller's cached GetValidTokens latency (one session, one call at a time, at
//     most BENCH_GOOD_RATE a second: inside the per-caller limits) before and after the abuse
//     (unloaded) and during it (loaded), in batches of 1,000 calls: p50 and p99 (the median
//     batch's, and all calls pooled) and the loaded ÷ unloaded ratios;
//   - token-endpoint requests at the provider (total, most at once, most in one second) against
//     the config's provider limits when it has them;
//   - failed well-behaved calls;
//   - what each abuser got: distinct sessions stored and read, unknown-session and
//     min-validity calls and their codes, slow-header and idle connections closed by the server
//     and when, WatchToken streams opened before one was refused.
//
// The callers are told apart the way a replica tells them apart in production: each presents its
// own API key (api-key:good, api-key:abuser, and api-key:streamer for the client opening streams;
// one policy rule allows them the RPCs used), so limits
// kept per caller apply to the abusers, not to the well-behaved caller on the same loopback address.
//
// The session flood stops early when the replica's RSS passes twice the budget (so a build
// without a bound does not take the machine down), and says so.
//
// Options (env): BENCH_SECONDS (90: the abuse phase), BENCH_SESSIONS (1000000), BENCH_CALLS
// (3000 well-behaved calls per phase), BENCH_GOOD_RATE (500: the well-behaved caller's calls per
// second at most), BENCH_CONFIG (a YAML file merged over the bench's config:
// e.g. a `limits` section), BENCH_SLOW_CONNECTIONS (200), BENCH_IDLE_CONNECTIONS (200),
// BENCH_STREAMS_MAX (12000).

import { execFileSync, fork } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { parse as parseYaml } from "yaml";
import {
  GetValidTokensRequestSchema,
  StoreUpstreamTokensRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { generateApiKey } from "../src/auth/index.ts";
import { api } from "../test/support/stack.ts";
import type { AbuseReport, AbuseSettings } from "./abuse-client.ts";

const env = process.env;
const seconds = Number(env.BENCH_SECONDS ?? "90");
const calls = Number(env.BENCH_CALLS ?? "3000");
const goodRate = Number(env.BENCH_GOOD_RATE ?? "500");
const tokenChars = 1_700;

/** The bench's replica config, with BENCH_CONFIG merged over it (YAML). */
export function benchConfig(tokenEndpoint: string): Record<string, unknown> {
  const extra =
    env.BENCH_CONFIG !== undefined
      ? (parseYaml(readFileSync(env.BENCH_CONFIG, "utf8")) as Record<string, unknown>)
      : {};
  return {
    grpc: { listen: "127.0.0.1:0" },
    http: { listen: "127.0.0.1:0" },
    logLevel: "silent",
    shutdownGrace: "2s",
    auth: { apiKeys: { file: env.BENCH_KEYS_FILE } },
    policy: {
      rules: [
        {
          name: "bench",
          callers: ["api-key:good", "api-key:abuser", "api-key:streamer"],
          allow: [
            "StoreUpstreamTokens",
            "GetValidTokens",
            "GetAllUpstreamCredentials",
            "WatchToken",
            "RevokeSession",
          ],
          providers: ["idp"],
        },
      ],
    },
    ...extra,
    providers: {
      idp: { tokenEndpoint, clientId: "bench", authMethod: "none", timeout: "5s" },
      ...(extra.providers as object | undefined),
    },
  };
}

// --- the replica (a child process) ---

async function serve() {
  process.on("disconnect", () => process.exit(1));
  const { parseConfig } = await import("../src/config.ts");
  const { startServer } = await import("../src/server.ts");
  const config = parseConfig(benchConfig(env.BENCH_TOKEN_ENDPOINT!), {
    env: {},
    readFile: (p) => readFileSync(p, "utf8"),
  });
  const server = await startServer({ config });
  process.on("message", () => void server.shutdown().then(() => process.exit(0)));
  // What the RSS is made of, for the report at its peak.
  setInterval(() => process.send!({ memory: process.memoryUsage() }), 250).unref();
  // What the build says about its limits: the `limits` section when it has one.
  const limits = (config as unknown as { limits?: unknown }).limits;
  process.send!({
    grpcPort: server.grpcPort,
    httpPort: server.httpPort,
    limits: limits ?? null,
    transport: config.transportLimits,
    maxStreams: config.maxStreams,
  });
}

// --- the provider's token endpoint (a counting stub) ---

async function startProvider() {
  let total = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const perSecond = new Map<number, number>();
  const server = createServer((req, res) => {
    total++;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    const s = Math.floor(Date.now() / 1000);
    perSecond.set(s, (perSecond.get(s) ?? 0) + 1);
    req.resume();
    req.on("end", () =>
      // A provider that takes 20 ms, so concurrency shows.
      setTimeout(() => {
        inFlight--;
        res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
        res.end(
          JSON.stringify({
            access_token: `at-${total}-${"a".repeat(tokenChars)}`,
            token_type: "Bearer",
            expires_in: 3600,
            refresh_token: `rt-${total}`,
          }),
        );
      }, 20),
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`,
    stats: () => ({ total, maxInFlight, maxPerSecond: Math.max(0, ...perSecond.values()) }),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

// --- measurements ---

function procRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]) * 1024;
}

/** The pod's memory limit in the manifests it ships with, in bytes. */
/** The heap flag the Deployment gives the replica (NODE_OPTIONS), so the bench runs it alike. */
function podHeapFlags(): string[] {
  const text = readFileSync(new URL("../k8s/deployment.yaml", import.meta.url), "utf8");
  const m = /name: NODE_OPTIONS\s*\n\s*value:\s*(.+)/.exec(text);
  return (m?.[1] ?? "").split(/\s+/).filter((a) => /^--max-old-space-size=\d+$/.test(a));
}

function podMemoryLimit(): number {
  const text = readFileSync(new URL("../k8s/deployment.yaml", import.meta.url), "utf8");
  const m = /limits:\s*\n\s*memory:\s*(\d+)Mi/.exec(text);
  return Number(m?.[1] ?? 512) * 1024 * 1024;
}

/**
 * A memory budget for the whole replica in the config's `limits` section, when the build has
 * one (a number under a key naming memory, in bytes or, ending in MB, megabytes). The caches'
 * and stores' own byte bounds are parts of it, not the budget.
 */
function configBudget(limits: unknown): number | undefined {
  const found: number[] = [];
  const walk = (o: unknown) => {
    if (typeof o !== "object" || o === null) return;
    for (const [k, v] of Object.entries(o)) {
      if (typeof v === "number" && /memory/i.test(k)) found.push(/mb$/i.test(k) ? v * 2 ** 20 : v);
      walk(v);
    }
  };
  walk(limits);
  return found.length > 0 ? Math.max(...found) : undefined;
}

const percentile = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ??
  Number.NaN;

/**
 * `n` cached GetValidTokens calls, one at a time, started at `rate` per second at most: a caller
 * that stays inside the per-caller limits (their default is 1,000 per second per RPC).
 */
async function wellBehaved(client: ReturnType<typeof api>, n: number) {
  const req = create(GetValidTokensRequestSchema, { sessionId: "good-caller", provider: "idp" });
  const ms: number[] = [];
  const failures: Record<string, number> = {};
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    const due = started + (i * 1000) / goodRate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const t0 = performance.now();
    try {
      await client.getValidTokens(req);
      ms.push(performance.now() - t0);
    } catch (err) {
      const code = String((err as { code?: unknown }).code);
      failures[code] = (failures[code] ?? 0) + 1;
    }
  }
  ms.sort((a, b) => a - b);
  const failed = Object.values(failures).reduce((a, b) => a + b, 0);
  return { p50: percentile(ms, 50), p99: percentile(ms, 99), failed, failures, calls: n, ms };
}

type Batch = Awaited<ReturnType<typeof wellBehaved>>;

/** `n` calls in batches of at most 1,000 (the loaded phase's size: p99s compare like for like). */
async function batches(client: ReturnType<typeof api>, n: number): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let left = n; left > 0; left -= 1000)
    out.push(await wellBehaved(client, Math.min(1000, left)));
  return out;
}

async function orchestrate() {
  const provider = await startProvider();
  const good = generateApiKey("good");
  const abuser = generateApiKey("abuser");
  const streamer = generateApiKey("streamer");
  const keysDir = mkdtempSync(path.join(tmpdir(), "tokenvend-bench-"));
  const keysFile = path.join(keysDir, "keys.yaml");
  writeFileSync(
    keysFile,
    `keys:\n${[good, abuser, streamer].map(({ entry }) => `  - id: ${entry.id}\n    sha256: ${entry.sha256}\n`).join("")}`,
  );
  const heapFlags = (
    JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      scripts: { start: string };
    }
  ).scripts.start
    .split(/\s+/)
    .filter((a) => /^--max-(semi|old)-space-size=\d+$/.test(a));
  const server = fork(import.meta.filename, ["serve"], {
    execArgv: [
      ...heapFlags,
      ...podHeapFlags(),
      ...(env.BENCH_REPLICA_FLAGS ?? "").split(" ").filter(Boolean),
    ],
    env: { ...env, BENCH_TOKEN_ENDPOINT: provider.url, BENCH_KEYS_FILE: keysFile },
  });
  let peakMemory: NodeJS.MemoryUsage | undefined;
  const ready = await new Promise<{
    grpcPort: number;
    httpPort: number;
    limits: unknown;
    transport: unknown;
    maxStreams: number;
  }>((resolve, reject) => {
    server.once("message", (m) => resolve(m as never));
    server.on("message", (m: { memory?: NodeJS.MemoryUsage }) => {
      if (m.memory !== undefined && m.memory.rss >= (peakMemory?.rss ?? 0)) peakMemory = m.memory;
    });
    server.once("exit", (c) => reject(new Error(`the replica exited with ${c}`)));
  });
  const pid = server.pid!;
  const budget = configBudget(ready.limits) ?? podMemoryLimit();
  const budgetSource =
    configBudget(ready.limits) !== undefined
      ? "the config's limits section"
      : "the config's limits name no memory budget: the pod's memory limit (k8s/deployment.yaml)";
  const goodClient = api(`127.0.0.1:${ready.grpcPort}`, { authorization: `Bearer ${good.key}` });
  await goodClient.storeUpstreamTokens(
    create(StoreUpstreamTokensRequestSchema, {
      sessionId: "good-caller",
      provider: "idp",
      accessToken: `at-good-${"g".repeat(tokenChars)}`,
      refreshToken: "rt-good",
      expiry: { case: "expiresAt", value: timestampFromMs(Date.now() + 3_600_000) },
    }),
  );
  await wellBehaved(goodClient, 500); // warm-up
  const rssIdle = procRss(pid);
  const unloaded = await batches(goodClient, calls);

  let maxRss = rssIdle;
  const rssSamples: number[] = [];
  const abusers = fork(new URL("./abuse-client.ts", import.meta.url).pathname, [], {
    env: { ...env },
  });
  const settings: AbuseSettings = {
    grpcPort: ready.grpcPort,
    httpPort: ready.httpPort,
    seconds,
    sessions: Number(env.BENCH_SESSIONS ?? "1000000"),
    tokenChars,
    slowConnections: Number(env.BENCH_SLOW_CONNECTIONS ?? "200"),
    idleConnections: Number(env.BENCH_IDLE_CONNECTIONS ?? "200"),
    streamsMax: Number(env.BENCH_STREAMS_MAX ?? "12000"),
    rssStopBytes: 2 * budget,
    authorization: `Bearer ${abuser.key}`,
    streamerAuthorization: `Bearer ${streamer.key}`,
  };
  // BENCH_PIN=1: the abusers on the last core, the replica and this process on the others, as
  // if the abusers ran on machines of their own (they share the replica's cores otherwise).
  const pinned = env.BENCH_PIN === "1" && cpus().length >= 2;
  if (pinned) {
    const last = cpus().length - 1;
    const rest = last === 1 ? "0" : `0-${last - 1}`;
    for (const [p, cores] of [
      [abusers.pid, String(last)],
      [pid, rest],
      [process.pid, rest],
    ] as const) {
      execFileSync("taskset", ["-a", "-p", "-c", cores, String(p)], { stdio: "ignore" });
    }
  }
  // BENCH_NICE=1: the abusers at the lowest CPU priority, so they run on what the replica and the
  // measuring caller leave, as load from other machines would (they compete for the cores else).
  if (env.BENCH_NICE === "1") {
    // Every thread (renice -p takes one): its event loop, V8's and libuv's workers.
    for (const tid of readdirSync(`/proc/${abusers.pid}/task`)) {
      execFileSync("renice", ["-n", "19", "-p", tid], { stdio: "ignore" });
    }
  }
  abusers.send({ cmd: "start", settings });
  const sampler = setInterval(() => {
    try {
      const rss = procRss(pid);
      rssSamples.push(rss);
      maxRss = Math.max(maxRss, rss);
      abusers.send({ cmd: "rss", rss });
    } catch {}
  }, 250);
  const cpuStart = process.cpuUsage();
  await new Promise((r) => setTimeout(r, 3_000)); // let every abuser get going
  const loaded: Awaited<ReturnType<typeof wellBehaved>>[] = [];
  const endAt = Date.now() + (seconds - 6) * 1000;
  while (Date.now() < endAt) loaded.push(await wellBehaved(goodClient, Math.min(calls, 1000)));
  const report = await new Promise<AbuseReport>((resolve) => {
    abusers.once("message", (m) => resolve(m as AbuseReport));
    abusers.send({ cmd: "stop" });
  });
  clearInterval(sampler);
  const after = await batches(goodClient, calls);
  const cpu = process.cpuUsage(cpuStart);
  server.send("stop");
  await new Promise((r) => server.once("exit", r));
  abusers.kill();
  goodClient.close();
  rmSync(keysDir, { recursive: true, force: true });
  await provider.close();
  printReport({
    ready,
    budget,
    budgetSource,
    rssIdle,
    maxRss,
    rssSamples,
    peakMemory,
    unloaded,
    loaded,
    after,
    report,
    provider: provider.stats(),
    cpuMs: (cpu.user + cpu.system) / 1000,
  });
}

/** The median of the batches' p99s, and the p99 of all their calls together. */
function p99Of(batches: readonly Batch[]) {
  const p99s = batches.map((b) => b.p99).sort((a, b) => a - b);
  const all = batches.flatMap((b) => b.ms).sort((a, b) => a - b);
  return {
    median: percentile(p99s, 50),
    worst: p99s.at(-1) ?? Number.NaN,
    pooled: percentile(all, 99),
    p50: percentile(all, 50),
    calls: all.length,
  };
}

function printReport(r: {
  ready: { limits: unknown; transport: unknown; maxStreams: number };
  budget: number;
  budgetSource: string;
  rssIdle: number;
  maxRss: number;
  rssSamples: number[];
  peakMemory: NodeJS.MemoryUsage | undefined;
  unloaded: Batch[];
  loaded: Batch[];
  after: Batch[];
  report: AbuseReport;
  provider: { total: number; maxInFlight: number; maxPerSecond: number };
  cpuMs: number;
}) {
  const mb = (b: number) => (b / 1024 / 1024).toFixed(0);
  const ms = (x: number) => x.toFixed(3);
  // p99s of batches of 1,000 calls: the median batch's, the worst's, and all calls pooled. The
  // unloaded ones are the calls before and after the abuse.
  const before = p99Of(r.unloaded);
  const after = p99Of(r.after);
  const quiet = p99Of([...r.unloaded, ...r.after]);
  const loaded = p99Of(r.loaded);
  const every = [...r.unloaded, ...r.loaded, ...r.after];
  const failed = every.reduce((a, l) => a + l.failed, 0);
  const failedCodes: Record<string, number> = {};
  for (const f of every) {
    for (const [code, n] of Object.entries(f.failures))
      failedCodes[code] = (failedCodes[code] ?? 0) + n;
  }
  const over = r.rssSamples.filter((s) => s > r.budget).length;
  const a = r.report;
  // Medians cross IPC as null when nothing closed.
  const closed = (n: number, of: number, medianMs: number | null) =>
    n === 0
      ? `0 of ${of} within the run`
      : `${n} of ${of}, median after ${ms((medianMs ?? 0) / 1000)} s`;
  const providerLimits = (
    r.ready.limits as { providers?: { maxConcurrent: number; ratePerSecond: number } } | null
  )?.providers;
  const x = (n: number, d: number) => `${(n / d).toFixed(2)}×`;
  console.log(`
well-behaved caller: at most ${goodRate} calls/s, one at a time
replica heap flags: the Deployment's NODE_OPTIONS (${podHeapFlags().join(" ")}) over npm start's
cores: ${process.env.BENCH_PIN === "1" ? "abusers pinned to the last core, the replica and the well-behaved caller to the others (BENCH_PIN=1)" : "shared by all (BENCH_PIN=1 splits them)"}${process.env.BENCH_NICE === "1" ? "; abusers at nice 19 (BENCH_NICE=1)" : ""}
machine: ${cpus().length} × ${cpus()[0]?.model}, ${mb(totalmem())} MB, load ${loadavg()
    .map((v) => v.toFixed(2))
    .join(" ")}, Node ${process.version}
config limits section: ${r.ready.limits === null ? "none (this build has none)" : JSON.stringify(r.ready.limits)}

| measure | value | target |
| --- | --- | --- |
| replica RSS idle / peak over the run | ${mb(r.rssIdle)} / ${mb(r.maxRss)} MB (${over} of ${r.rssSamples.length} samples over budget) | < ${mb(r.budget)} MB (${r.budgetSource}) |
| replica at its highest RSS (its own reading): heap used / total, external (of which array buffers) | ${r.peakMemory === undefined ? "not reported" : `${mb(r.peakMemory.rss)} MB: ${mb(r.peakMemory.heapUsed)} / ${mb(r.peakMemory.heapTotal)} MB, ${mb(r.peakMemory.external)} MB (${mb(r.peakMemory.arrayBuffers)} MB)`} | |
| well-behaved cached GetValidTokens p99, batches of 1,000: median batch (worst batch; all calls pooled) | before the abuse ${ms(before.median)} (${ms(before.worst)}; ${ms(before.pooled)}) ms, after it ${ms(after.median)} (${ms(after.worst)}; ${ms(after.pooled)}) ms | |
| … unloaded (before and after: ${quiet.calls} calls): p50, p99 median batch, pooled | ${ms(quiet.p50)}, ${ms(quiet.median)}, ${ms(quiet.pooled)} ms | |
| … loaded (${r.loaded.length} batches, ${loaded.calls} calls): p50, p99 median batch (worst), pooled | ${ms(loaded.p50)}, ${ms(loaded.median)} (${ms(loaded.worst)}), ${ms(loaded.pooled)} ms | |
| loaded p99 ÷ unloaded p99: median batch, pooled (÷ before the abuse only) | ${x(loaded.median, quiet.median)}, ${x(loaded.pooled, quiet.pooled)} (${x(loaded.median, before.median)}, ${x(loaded.pooled, before.pooled)}) | ≤ 2× |
| well-behaved calls failed (by gRPC code) | ${failed} ${JSON.stringify(failedCodes)} of ${every.reduce((n, l) => n + l.calls, 0)} | 0 |
| provider token-endpoint requests: total, most at once, most in one second | ${r.provider.total}, ${r.provider.maxInFlight}, ${r.provider.maxPerSecond} | ${providerLimits !== undefined ? `≤ ${providerLimits.maxConcurrent} at once, ≤ ${providerLimits.ratePerSecond}/s (limits.providers)` : "no provider limits in this build"} |
| distinct sessions stored / read | ${a.sessionsStored} / ${a.sessionsRead} (${a.sessionsStoppedBy}); store codes ${JSON.stringify(a.storeCodes)}, read codes ${JSON.stringify(a.readCodes)} | 1,000,000 |
| unknown-session calls | ${a.unknownCalls}, codes ${JSON.stringify(a.unknownCodes)} | |
| min-validity (7 days) calls | ${a.minValidityCalls}, codes ${JSON.stringify(a.minValidityCodes)} | no refresh each |
| slow-header connections (a header line a second) closed by the server | ${closed(a.slowClosed, a.slowOpened, a.slowClosedMedianMs)} | closed (headersTimeout) |
| idle connections (nothing sent) closed: HTTP, gRPC | ${closed(a.idleHttpClosed, a.idleOpened, a.idleHttpClosedMedianMs)}, ${closed(a.idleGrpcClosed, a.idleOpened, a.idleGrpcClosedMedianMs)} | closed |
| WatchToken streams opened by one client before one was refused | ${a.streamsOpened} (${a.streamsRefusal}) | maxStreams ${r.ready.maxStreams}, ${JSON.stringify((r.ready.transport as { grpc?: { maxConcurrentStreams?: number } }).grpc?.maxConcurrentStreams)} per connection |
`);
}

if (process.argv[2] === "serve") await serve();
else await orchestrate();
