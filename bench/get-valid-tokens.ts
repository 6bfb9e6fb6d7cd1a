// `npm run bench`: cached GetValidTokens against an echo RPC on the same grpc-js
// server in the same run, with ghz as the load generator. The echo decodes the
// same request and answers a pre-built response of the same shape, so the gap
// between the two is what tokenvend's hot path costs on top of grpc-js.
//
// Options (env): BENCH_CALLS per round (default 30000; a count, not a duration:
// ghz's -z cuts calls off at the end and reports them UNAVAILABLE), BENCH_CONCURRENCY (50),
// BENCH_CONNECTIONS (4), BENCH_ROUNDS (3: echo and GetValidTokens alternate),
// BENCH_TELEMETRY=1 (telemetry on, as under OTEL_*: async context, every span
// recorded and batched to an exporter that drops it, metrics aggregated),
// BENCH_AUTH=jwt (every GetValidTokens carries a Kubernetes service-account
// token from a loopback JWKS issuer, verified, its key set and the verified
// token cached, then the policy and the session's owner checked) or
// BENCH_AUTH=mtls (TLS on the listener, the caller identified by its client
// certificate's SPIFFE id; the echo runs over the same TLS). The echo itself is
// never authenticated: the gap is what authentication costs. BENCH_CALLER_LIMITS=1: the
// per-caller limits on (off otherwise), each GetValidTokens counted against its caller's rate.

import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { promisify } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  GetValidTokensRequestSchema,
  GetValidTokensResponseSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { ensureAllTools, toolEnv } from "../scripts/tools.ts";
import { parseConfig } from "../src/config.ts";
import { startLocalIdp } from "../src/dev/local-idp.ts";
import { toCredential } from "../src/rpc/token-service.ts";
import { startServer } from "../src/server.ts";
import { createTestCa } from "../test/support/certs.ts";
import { startJwksIssuer } from "../test/support/jwks-issuer.ts";
import { benchTelemetry } from "./telemetry.ts";

const run = promisify(execFile);
const calls = process.env.BENCH_CALLS ?? "30000";
const concurrency = process.env.BENCH_CONCURRENCY ?? "50";
const connections = process.env.BENCH_CONNECTIONS ?? "4";
const rounds = Number(process.env.BENCH_ROUNDS ?? "3");
const repo = new URL("..", import.meta.url).pathname;

interface GhzReport {
  count: number;
  rps: number;
  average: number;
  latencyDistribution: { percentage: number; latency: number }[] | null;
  statusCodeDistribution: Record<string, number>;
}

await ensureAllTools();
const ghz = `${toolEnv().TOKENVEND_TOOLS_BIN}/ghz`;

const authMode = process.env.BENCH_AUTH ?? "off";
if (!["off", "jwt", "mtls"].includes(authMode))
  throw new Error("BENCH_AUTH must be off, jwt or mtls");
const caller =
  authMode === "mtls"
    ? "spiffe://bench.test/ns/bench/sa/client"
    : "system:serviceaccount:bench:client";
const issuer = authMode === "jwt" ? await startJwksIssuer() : undefined;
const ca = authMode === "mtls" ? await createTestCa("bench") : undefined;
const serverCert = await ca?.issue("server", "server", ["IP:127.0.0.1"], "server");
const clientCert = await ca?.issue("client", "client", [`URI:${caller}`], "client");
const idp = await startLocalIdp();
const client = idp.client("tokenvend");
const config = parseConfig(
  {
    grpc: { listen: "127.0.0.1:0" },
    http: { listen: "127.0.0.1:0" },
    logLevel: "silent",
    // One caller at full speed: off unless BENCH_CALLER_LIMITS=1, then a rate it never reaches,
    // so the gap is what counting each call per caller costs.
    limits: {
      callers:
        process.env.BENCH_CALLER_LIMITS === "1"
          ? { requestsPerSecond: 1_000_000, rpcs: { GetValidTokens: 1_000_000 } }
          : { disabled: true },
    },
    providers: { idp: { issuer: idp.issuer, clientId: client.clientId, clientSecretEnv: "S" } },
    ...(issuer !== undefined
      ? { auth: { jwt: { issuers: [{ issuer: issuer.issuer, audiences: ["tokenvend"] }] } } }
      : {}),
    ...(ca !== undefined && serverCert !== undefined
      ? {
          auth: { mtls: true },
          tls: { certFile: serverCert.cert, keyFile: serverCert.key, clientCaFile: ca.caCert },
        }
      : {}),
    policy: {
      rules: [{ name: "bench", callers: [caller], allow: ["GetValidTokens"], providers: ["idp"] }],
    },
  },
  { env: { S: client.clientSecret }, readFile: (p) => readFileSync(p, "utf8") },
);
// A token that outlives the run: verified once, then served from the verified-token cache.
const bearer = await issuer?.sign({ namespace: "bench", name: "client", expiresIn: 3600 });

const minted = await idp.mintRefreshToken({ clientId: client.clientId, accountId: "bench" });
const now = Date.now();
const record = {
  key: { kind: "session" as const, sessionId: "bench-session", provider: "idp" },
  generation: 1,
  reason: "stored" as const,
  tokens: {
    accessToken: minted.accessToken,
    refreshToken: minted.refreshToken,
    idToken: minted.idToken,
    tokenType: "Bearer",
    scopes: minted.scopes,
    issuedAt: now,
    expiresAt: now + 3_600_000,
    // Stored as the caller would store it: the caller owns it.
    ...(authMode !== "off" ? { owner: caller } : {}),
  },
};
// The echo's constant answer has the same size as the real one.
const echoAnswer = Buffer.from(
  toBinary(
    GetValidTokensResponseSchema,
    create(GetValidTokensResponseSchema, { credential: toCredential(record) }),
  ),
);

const telemetry = process.env.BENCH_TELEMETRY === "1" ? await benchTelemetry() : undefined;
const server = await startServer({
  config,
  ...(telemetry !== undefined ? { telemetry } : {}),
  openGrpcPaths: ["/tokenvend.bench.v1.EchoService/Echo"],
  configureGrpc: (s) =>
    s.addService(
      {
        Echo: {
          path: "/tokenvend.bench.v1.EchoService/Echo",
          requestStream: false,
          responseStream: false,
          requestSerialize: (m: unknown) =>
            Buffer.from(toBinary(GetValidTokensRequestSchema, m as never)),
          requestDeserialize: (b: Buffer) => fromBinary(GetValidTokensRequestSchema, b),
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      {
        Echo: (_call: grpc.ServerUnaryCall<unknown, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
          cb(null, echoAnswer),
      },
    ),
});
await server.vendor.storeUpstreamTokens({
  sessionId: "bench-session",
  provider: "idp",
  tokens: record.tokens,
});
const target = `127.0.0.1:${server.grpcPort}`;
const data = JSON.stringify({ session_id: "bench-session", provider: "idp" });

/** ghz's transport and credential flags for the mode: the same for the echo and GetValidTokens. */
const security =
  ca !== undefined && clientCert !== undefined
    ? ["--cacert", ca.caCert, "--cert", clientCert.cert, "--key", clientCert.key]
    : ["--insecure"];
const metadata =
  bearer !== undefined ? ["--metadata", JSON.stringify({ authorization: `Bearer ${bearer}` })] : [];

async function load(call: string, proto: string): Promise<GhzReport & { cpuUsPerCall: number }> {
  const before = process.cpuUsage();
  const { stdout } = await run(
    ghz,
    [
      ...security,
      ...metadata,
      "--proto",
      proto,
      "-i",
      `${repo}proto,${repo}bench/proto`,
      "--call",
      call,
      "-d",
      data,
      "-c",
      concurrency,
      "--connections",
      connections,
      "-n",
      calls,
      "--format",
      "json",
      target,
    ],
    { maxBuffer: 64 * 1024 * 1024 },
  );
  const cpu = process.cpuUsage(before);
  const r = JSON.parse(stdout) as GhzReport;
  return { ...r, cpuUsPerCall: (cpu.user + cpu.system) / r.count };
}

const pct = (r: GhzReport, p: number) =>
  (r.latencyDistribution?.find((d) => d.percentage === p)?.latency ?? Number.NaN) / 1e6;

const echoProto = "bench/proto/tokenvend/bench/v1/echo.proto";
const tvProto = "proto/tokenvend/v1/token_service.proto";
// Warm both paths (JIT, connections) before measuring.
process.env.BENCH_WARM !== "0" &&
  (await run(ghz, [
    ...security,
    ...metadata,
    "--proto",
    tvProto,
    "-i",
    `${repo}proto`,
    "--call",
    "tokenvend.v1.TokenService.GetValidTokens",
    "-d",
    data,
    "-n",
    "20000",
    "-c",
    concurrency,
    target,
  ]));

const rows: { name: string; r: GhzReport & { cpuUsPerCall: number } }[] = [];
for (let i = 0; i < rounds; i++) {
  rows.push({ name: "echo", r: await load("tokenvend.bench.v1.EchoService.Echo", echoProto) });
  rows.push({
    name: "GetValidTokens",
    r: await load("tokenvend.v1.TokenService.GetValidTokens", tvProto),
  });
}
await server.shutdown();
await idp.stop();
await issuer?.stop();

const sum = (name: string) => {
  const rs = rows.filter((x) => x.name === name).map((x) => x.r);
  const n = rs.reduce((a, r) => a + r.count, 0);
  const ok = rs.reduce((a, r) => a + (r.statusCodeDistribution.OK ?? 0), 0);
  const median = (xs: number[]) =>
    xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
  return {
    calls: n,
    ok,
    rps: median(rs.map((r) => r.rps)),
    p50: median(rs.map((r) => pct(r, 50))),
    p99: median(rs.map((r) => pct(r, 99))),
    cpu: median(rs.map((r) => r.cpuUsPerCall)),
  };
};
const echo = sum("echo");
const hot = sum("GetValidTokens");
const lines = [
  `date: ${new Date().toISOString()}`,
  `machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`,
  `telemetry: ${telemetry !== undefined ? "on (BENCH_TELEMETRY=1)" : "off"}`,
  `caller authentication: ${authMode}${authMode !== "off" ? ` (BENCH_AUTH=${authMode}; the echo is not authenticated)` : ""}`,
  `command: npm run bench (ghz -c ${concurrency} --connections ${connections} -n ${calls}, ${rounds} alternating rounds, medians)`,
  "",
  "| RPC | calls | OK | req/s | p50 ms | p99 ms | server CPU µs/call |",
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...[
    ["echo (baseline)", echo],
    ["GetValidTokens (cached)", hot],
  ].map(
    ([name, s]) =>
      `| ${name} | ${(s as typeof echo).calls} | ${(s as typeof echo).ok} | ${(s as typeof echo).rps.toFixed(0)} | ${(s as typeof echo).p50.toFixed(2)} | ${(s as typeof echo).p99.toFixed(2)} | ${(s as typeof echo).cpu.toFixed(1)} |`,
  ),
  "",
  `throughput ratio GetValidTokens / echo: ${(hot.rps / echo.rps).toFixed(3)} (target ≥ ${authMode === "off" ? "0.9" : "0.85"})`,
];
process.stdout.write(`${lines.join("\n")}\n`);
for (const { name, r } of rows) {
  const failed = Object.entries(r.statusCodeDistribution).filter(([code]) => code !== "OK");
  if (failed.length > 0) {
    process.stderr.write(
      `${name}: non-OK statuses ${JSON.stringify(Object.fromEntries(failed))}\n`,
    );
    process.exitCode = 1;
  }
}
