// `npm run bench:cluster`: a cluster that scales with its changes, not its keys. Three replicas
// (`npm start`'s command, each its own process) share FerretDB on a private PostgreSQL
// (scripts/ferretdb.ts, durable settings) through a counting proxy (bench/mongo-proxy.ts: every
// command the replicas send, by name, from the wire). At each step every replica caches the
// step's number of keys, and the bench measures:
//
//   idle    the database's CPU (FerretDB and its PostgreSQL processes, from /proc) and the
//           commands/s the replicas send, over BENCH_IDLE_S seconds with nothing happening;
//   load    the same under BENCH_RATE renewals/s (StoreUpstreamTokens of a new generation of a
//           watched key through replica A), and each renewal's visibility: from A's answer to
//           the new token's arrival on WatchToken streams held on replicas B and C;
//   calls   StoreUpstreamTokens (new sessions, replica A) and cold GetValidTokens (keys replica
//           C never read) throughput and latency, BENCH_CALLS each, 8 at a time;
//   herd    3 replicas × 300 concurrent callers on one expired token: token-endpoint requests.
//
// Keys are sessions × providers: BENCH_PROVIDERS providers (default 100, all the same local
// identity provider), so a replica caches a session's keys with one GetAllUpstreamCredentials.
// The keys are seeded straight into the database (sealed with the cluster's key, as a replica
// writes them): FerretDB's PostgreSQL backend answers every lookup with a scan (it pushes
// equality down as jsonb containment, which the backend's btree indexes cannot serve), so
// 100,000 StoreUpstreamTokens and 300,000 cold reads would take hours here.
//
// Targets (issue 12): idle database CPU and commands/s flat within ±20 % from the first step to
// the last; visibility p99 ≤ syncInterval + 250 ms at every step; the herd costs one request.
//
// MONGODB_URI runs it against that MongoDB instead (its CPU is then not measured).
//
// Env: BENCH_STEPS (1000,10000,100000), BENCH_PROVIDERS (100), BENCH_IDLE_S (60),
// BENCH_LOAD_S (30), BENCH_RATE (10), BENCH_CALLS (200), BENCH_WATCHED (50),
// BENCH_PLOT (docs/bench-cluster.png), BENCH_JSON (a file for the raw results).

import { writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { MongoClient } from "mongodb";
import {
  GetAllUpstreamCredentialsRequestSchema,
  StoreUpstreamTokensRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { startFerretdb } from "../scripts/ferretdb.ts";
import { sessionKey } from "../src/core/token.ts";
import { startLocalIdp } from "../src/dev/local-idp.ts";
import { toMongo } from "../src/store/mongo-documents.ts";
import { generateKey, parseKeyring } from "../src/store/sealing.ts";
import { type ServerProcess, spawnServer } from "../test/support/server-process.ts";
import { api, getValid } from "../test/support/stack.ts";
import { measure, pool, summary, timed } from "./cluster-measure.ts";
import { plotCluster, type StepResult } from "./cluster-plot.ts";
import { startCountingProxy } from "./mongo-proxy.ts";

const env = process.env;
const steps = (env.BENCH_STEPS ?? "1000,10000,100000").split(",").map(Number);
const providers = Number(env.BENCH_PROVIDERS ?? "100");
const idleS = Number(env.BENCH_IDLE_S ?? "60");
const loadS = Number(env.BENCH_LOAD_S ?? "30");
const rate = Number(env.BENCH_RATE ?? "10");
const calls = Number(env.BENCH_CALLS ?? "200");
const watched = Number(env.BENCH_WATCHED ?? "50");
const plotPath = env.BENCH_PLOT ?? "docs/bench-cluster.png";
const SYNC_MS = 1_000;
/** Each replica's sweep; an idle window starts once the sweeps after the last writes ran. */
const SWEEP_MS = 15_000;
/**
 * How long change records stay (the default is 2 min). A replica's every read of the change log
 * scans the records of the window on FerretDB: a cost of the changes of the last RETENTION_MS,
 * which an idle window waits out.
 */
const RETENTION_MS = 30_000;

const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);

type Api = ReturnType<typeof api>;

async function main() {
  // MONGODB_URI: a MongoDB of the caller's (its CPU is not measured from here: reported as NaN).
  const mongo = env.MONGODB_URI
    ? { uri: env.MONGODB_URI, pid: 0, stop: async () => {} }
    : await startFerretdb({ durable: true });
  const proxy = await startCountingProxy(mongo.uri);
  // Renewed tokens live an hour: a herd that takes seconds on a saturated database must not find
  // its renewal expired already (that would be a legitimate second refresh, not a double one).
  const idp = await startLocalIdp({ accessTokenTtlSec: 3_600 });
  const client = idp.client("tokenvend");
  const key = `primary:${generateKey()}`;
  const keyring = parseKeyring(key);
  const db = `bench_cluster_${Date.now()}`;
  const yaml = [
    "grpc: { listen: 127.0.0.1:0 }",
    "http: { listen: 127.0.0.1:0 }",
    "logLevel: info",
    `syncInterval: ${SYNC_MS}ms`,
    "idleEvict: 10h",
    `sweepInterval: ${SWEEP_MS}ms`,
    `changeLogRetention: ${RETENTION_MS}ms`,
    "shutdownGrace: 2s",
    "maxStreams: 100000",
    // What the bench measures is the cluster at 100,000 keys, not the limits a caller meets.
    "limits: { callers: { disabled: true }, cache: { maxKeys: 1000000, maxBytes: 1Gi } }",
    "providers:",
    ...Array.from({ length: providers }, (_, i) => [
      `  p${i}:`,
      `    issuer: ${idp.issuer}`,
      `    clientId: ${client.clientId}`,
      "    clientSecretEnv: IDP_SECRET",
      "    lifetime: { clockSkew: 1s, refreshMargin: 0s }",
    ]).flat(),
  ].join("\n");
  const replicaEnv = {
    IDP_SECRET: client.clientSecret ?? "",
    MONGODB_URI: proxy.uri,
    TOKENVEND_MONGODB_DB: db,
    TOKENVEND_ENCRYPTION_KEYS: key,
  };
  const replicas: ServerProcess[] = [];
  for (let i = 0; i < 3; i++) replicas.push(await spawnServer(yaml, replicaEnv));
  const [a, b, c] = replicas.map((r) => api(r.grpc)) as [Api, Api, Api];
  const direct = await new MongoClient(mongo.uri).connect();
  const tokens = direct.db(db).collection("tokens");
  const feed = replicas[0]?.logs.find((l) => String(l.msg).startsWith("store change feed"));
  log(`3 replicas up; change feed: ${feed?.method}`);

  const results: StepResult[] = [];
  let sessions = 0;
  let stream: ReturnType<typeof watchAll> | undefined;
  try {
    for (const step of steps) {
      const want = Math.ceil(step / providers);
      log(`step ${step}: seeding sessions ${sessions}..${want - 1} (${providers} keys each)`);
      for (let s = sessions; s < want; s += 10) {
        const docs = [];
        for (let i = s; i < Math.min(want, s + 10); i++) {
          for (let p = 0; p < providers; p++)
            docs.push(toMongo(seedRecord(i, p), keyring, Date.now()));
        }
        await tokens.insertMany(docs, { ordered: false });
      }
      log(`step ${step}: warming ${want - sessions} sessions on each replica`);
      const warmStarted = performance.now();
      await Promise.all(
        [a, b, c].map((r) =>
          pool(want - sessions, 4, (i) =>
            r.getAllUpstreamCredentials(
              create(GetAllUpstreamCredentialsRequestSchema, { sessionId: `s-${sessions + i}` }),
              { deadlineMs: 600_000 },
            ),
          ),
        ),
      );
      const warmS = (performance.now() - warmStarted) / 1000;
      sessions = want;
      stream ??= watchAll([b, c], watched);
      await stream.ready;

      // Idle means idle: the previous step's change records expired and were swept.
      await sleep(RETENTION_MS + 2 * SWEEP_MS + 5_000);
      log(`step ${step}: idle for ${idleS} s`);
      const idle = await measure(mongo.pid, replicas, proxy, idleS * 1000, async () => {});
      log(`step ${step}: ${rate} renewals/s for ${loadS} s`);
      const latencies: number[] = [];
      const load = await measure(mongo.pid, replicas, proxy, loadS * 1000, () =>
        renew(a, stream!, rate, loadS * 1000, latencies),
      );
      await sleep(SYNC_MS * 3); // the last renewals' arrivals
      const missing = stream.outstanding();
      log(`step ${step}: StoreUpstreamTokens and cold GetValidTokens, ${calls} each`);
      const stores = await timed(calls, 8, (i) =>
        a.storeUpstreamTokens(storeRequest(`new-${step}-${i}`, "p1", `at-new-${i}`)),
      );
      const colds = await timed(calls, 8, (i) =>
        c.getValidTokens(getValid(`new-${step}-${i}`, "p1")),
      );
      const herd = await herdCheck(idp, client.clientId, [a, b, c], step).catch((err: Error) => {
        log(`step ${step}: the herd failed: ${err.message}`);
        return { requests: Number.NaN, invalidGrants: Number.NaN, distinctTokens: 0 };
      });
      const lookupMs = await lookupCost(tokens, sessions);
      const r: StepResult = {
        keys: step,
        warmS,
        lookupMs,
        failedRenewals: failed.renewals,
        idle,
        load,
        visibility: summary(latencies),
        missing,
        store: stores,
        cold: colds,
        herd,
      };
      results.push(r);
      failed.renewals = 0;
      log(`step ${step}: ${JSON.stringify(r)}`);
    }
  } finally {
    stream?.close();
    await direct.close();
    for (const r of replicas) r.kill("SIGTERM");
    await Promise.all(replicas.map((r) => r.exited));
    await proxy.close();
    await mongo.stop();
    await idp.stop();
  }
  report(results, String(feed?.method));
  await plotCluster(results, plotPath, SYNC_MS + 250);
  log(`plot: ${plotPath}`);
  if (env.BENCH_JSON) writeFileSync(env.BENCH_JSON, JSON.stringify(results, null, 2));
}

function seedRecord(session: number, provider: number) {
  const now = Date.now();
  return {
    key: sessionKey(`s-${session}`, `p${provider}`),
    generation: 1,
    reason: "stored" as const,
    tokens: {
      accessToken: `at-${session}-${provider}-${"x".repeat(800)}`,
      refreshToken: `rt-${session}-${provider}`,
      tokenType: "Bearer",
      scopes: ["openid", "offline_access"],
      issuedAt: now,
      expiresAt: now + 7_200_000,
      subject: `user-${session}`,
      clientId: "web",
    },
  };
}

const storeRequest = (
  sessionId: string,
  provider: string,
  accessToken: string,
  expiresIn = 7_200n,
) =>
  create(StoreUpstreamTokensRequestSchema, {
    sessionId,
    provider,
    accessToken,
    expiry: { case: "expiresIn", value: expiresIn },
  });

/** WatchToken streams on `replicas` for `n` keys of session s-0; arrivals by access token. */
function watchAll(replicas: Api[], n: number) {
  const arrivals = new Map<string, number[]>();
  const expected = new Set<string>();
  const streams: { cancel(): void }[] = [];
  const firsts: Promise<unknown>[] = [];
  const follow = async (
    it: AsyncIterator<{ credential?: { accessToken: string } | undefined }>,
  ) => {
    for (;;) {
      const m = await it.next().catch(() => ({ done: true as const, value: undefined }));
      if (m.done === true) return;
      const token = m.value?.credential?.accessToken;
      if (token === undefined) continue;
      const at = performance.now();
      const list = arrivals.get(token) ?? [];
      list.push(at);
      arrivals.set(token, list);
    }
  };
  for (const r of replicas) {
    for (let p = 1; p <= n; p++) {
      const s = r.watch({
        target: { case: "session", value: { sessionId: "s-0", provider: `p${p}` } },
      });
      streams.push(s);
      const it = s.messages[Symbol.asyncIterator]();
      // The first message is the current token; the ones after it are renewals.
      firsts.push(
        it.next().then(() => {
          void follow(it);
        }),
      );
    }
  }
  return {
    ready: Promise.all(firsts),
    /** Expect `token` on every replica; its arrival times as they come. */
    expect(token: string) {
      expected.add(token);
      return () => arrivals.get(token) ?? [];
    },
    forget(token: string) {
      expected.delete(token);
    },
    /** Renewals not seen on every replica. */
    outstanding() {
      let n = 0;
      for (const t of expected) if ((arrivals.get(t)?.length ?? 0) < replicas.length) n++;
      return n;
    },
    close() {
      for (const s of streams) s.cancel();
    },
  };
}

let renewalSeq = 0;
/** Renewals that failed (a saturated database answers STORE_UNAVAILABLE after 10 s). */
const failed = { renewals: 0 };
/** `perSecond` renewals for `ms` through `a`; each one's latency to every other replica. */
async function renew(
  a: Api,
  stream: ReturnType<typeof watchAll>,
  perSecond: number,
  ms: number,
  latencies: number[],
) {
  const started = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; performance.now() - started < ms; i++) {
    const due = started + (i * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const n = renewalSeq++;
    const token = `renewal-${n}`;
    const arrivals = stream.expect(token);
    pending.push(
      a.storeUpstreamTokens(storeRequest("s-0", `p${(n % watched) + 1}`, token)).then(
        async () => {
          const storedAt = performance.now();
          const deadline = storedAt + 10 * SYNC_MS;
          while (arrivals().length < 2 && performance.now() < deadline) await sleep(20);
          for (const t of arrivals()) latencies.push(Math.max(0, t - storedAt));
        },
        () => {
          failed.renewals++;
          stream.forget(token);
        },
      ),
    );
  }
  await Promise.all(pending);
}

/** 3 × 300 callers on one expired token: how many token-endpoint requests it cost. */
async function herdCheck(
  idp: Awaited<ReturnType<typeof startLocalIdp>>,
  clientId: string,
  replicas: Api[],
  step: number,
) {
  const minted = await idp.mintRefreshToken({ clientId, accountId: "alice" });
  const sessionId = `herd-${step}`;
  await replicas[0]!.storeUpstreamTokens(
    create(StoreUpstreamTokensRequestSchema, {
      sessionId,
      provider: "p0",
      accessToken: minted.accessToken,
      refreshToken: minted.refreshToken,
      expiry: { case: "expiresIn", value: 2n },
    }),
  );
  await sleep(2_500);
  const before = idp.counters.tokenRequests.refresh_token ?? 0;
  const invalidBefore = idp.counters.invalidGrant;
  const all = await Promise.all(
    replicas.flatMap((r) =>
      Array.from({ length: 300 }, () =>
        r.getValidTokens(getValid(sessionId, "p0"), { deadlineMs: 60_000 }),
      ),
    ),
  );
  return {
    requests: (idp.counters.tokenRequests.refresh_token ?? 0) - before,
    invalidGrants: idp.counters.invalidGrant - invalidBefore,
    distinctTokens: new Set(all.map((x) => x.credential?.accessToken)).size,
  };
}

/** What one lookup by key costs the database alone: the median of 21 finds, one at a time. */
async function lookupCost(
  tokens: ReturnType<ReturnType<MongoClient["db"]>["collection"]>,
  sessions: number,
): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < 21; i++) {
    const key = `s\u001fp${i % providers}\u001fs-${(i * 7919) % sessions}`;
    const t = performance.now();
    await tokens.find({ key }, { sort: { generation: -1 }, limit: 1 }).toArray();
    ms.push(performance.now() - t);
  }
  return summary(ms).p50;
}

function report(results: StepResult[], method: string) {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`date: ${new Date().toISOString()}`);
  out(
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`,
  );
  out(
    `command: npm run bench:cluster (steps ${steps.join(", ")}; ${providers} providers; idle ${idleS} s; ${rate} renewals/s for ${loadS} s; ${calls} calls; change feed: ${method})`,
  );
  out("");
  out(
    "| cached keys / replica | idle DB CPU % | idle commands/s | load DB CPU % | load commands/s | visibility p50 / p99 / max ms (n) | StoreUpstreamTokens /s, p99 ms | cold GetValidTokens /s, p99 ms | herd: token requests |",
  );
  out("| ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: |");
  for (const r of results) {
    out(
      `| ${r.keys.toLocaleString("en")} | ${r.idle.dbCpu} | ${r.idle.commandsPerS} | ${r.load.dbCpu} | ${r.load.commandsPerS} | ${r.visibility.p50} / ${r.visibility.p99} / ${r.visibility.max} (${r.visibility.n}) | ${r.store.perS}, ${r.store.p99} | ${r.cold.perS}, ${r.cold.p99} | ${r.herd.requests} |`,
    );
  }
  out("");
  for (const r of results)
    out(
      `idle commands at ${r.keys}: ${JSON.stringify(r.idle.byName)}; replicas' CPU ${r.idle.replicaCpu} %`,
    );
}

await main();
