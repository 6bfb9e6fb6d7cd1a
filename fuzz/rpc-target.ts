// The RPC fuzz target: one real replica (both listeners, the memory store, authentication off,
// a provider whose token endpoint refuses connections) and generated bodies for every RPC on
// every protocol of both listeners (fuzz/rpc-inputs.ts), sent many at a time over reused
// connections (test/support/raw-rpc.ts). What must hold, for every input:
//
//   - an answer with a status: never INTERNAL or UNKNOWN, never a reset or a hang (a body over
//     maxMessageBytes may be refused by resetting the stream: that is the listener's limit);
//   - no "internal error" logged;
//   - the store changed only by calls that succeeded: every key whose generation moved (or that
//     appeared) belongs to a session that an OK StoreUpstreamTokens or RevokeSession named;
//   - afterwards the replica still serves a seeded session on both listeners.

import { create, type DescMethod, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import {
  GetValidTokensRequestSchema,
  StoreUpstreamTokensRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { parseConfig } from "../src/config.ts";
import type { Logger } from "../src/core/logger.ts";
import { keyId } from "../src/core/token.ts";
import type { TokenStore } from "../src/core/token-store.ts";
import { startServer } from "../src/server.ts";
import { createMemoryStore } from "../src/store/memory-store.ts";
import { createRawClient, type RawOutcome } from "../test/support/raw-rpc.ts";
import type { RpcCorpus } from "./corpus.ts";
import { attribute, type Coverage } from "./coverage.ts";
import { decodeInput, inputsFor, known, methods, type RpcInput, routeOf } from "./rpc-inputs.ts";

export interface RpcFuzzOptions {
  /** How many inputs in all (spread over every RPC). */
  readonly inputs: number;
  readonly seed: number;
  /** Calls in flight at once. */
  readonly concurrency?: number;
  /** Corpus entries per method, mutated like generated ones (fuzz/corpus.ts). */
  readonly corpus?: ReadonlyMap<string, RpcCorpus>;
  /** Called for an input whose outcome (method, code, first words of the message) is new. */
  readonly onNewOutcome?: (input: RpcInput, outcome: RawOutcome) => void;
  /**
   * Guided: every `guidedBatch` answers the calls pause, the inputs that ran new blocks of src/
   * are found (fuzz/coverage.ts) and join the pool the next inputs are mutated from.
   */
  readonly coverage?: Coverage;
  readonly onNewCoverage?: (input: RpcInput) => void;
}

export interface RpcFuzzReport {
  readonly inputs: number;
  /** Per listener. */
  readonly byListener: Readonly<Record<"grpc" | "http", number>>;
  /** Per method name, then per gRPC code. */
  readonly byMethod: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** What broke a rule: empty on success. At most 20, with the input in hex or text. */
  readonly failures: readonly string[];
  readonly internalErrorsLogged: number;
  readonly storeViolations: readonly string[];
  readonly outcomes: number;
  readonly seconds: number;
  /** Guided runs: inputs that ran blocks of src/ no earlier input had; the blocks seen in all. */
  readonly newCoverage: number;
  readonly blocks: number;
}

/** Answers between two coverage readings of a guided run, and the most a pool keeps. */
const guidedBatch = 256;
const maxPool = 2_000;
const utf8 = new TextDecoder();

const maxMessageBytes = 16 * 1024;
const forbidden = new Set([2, 13]); // UNKNOWN, INTERNAL

async function snapshot(store: TokenStore): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let after: string | undefined;
  do {
    const page = await store.listActive({ after, limit: 1000 });
    for (const r of page.records) out.set(keyId(r.key), r.generation);
    after = page.next;
  } while (after !== undefined);
  return out;
}

function show(input: RpcInput): string {
  const body =
    input.encoding === "json"
      ? JSON.stringify(new TextDecoder().decode(input.body)).slice(0, 400)
      : Buffer.from(input.body).toString("hex").slice(0, 400);
  return `${input.method.name} ${input.encoding} ${body}`;
}

export async function fuzzRpc(opts: RpcFuzzOptions): Promise<RpcFuzzReport> {
  const started = performance.now();
  let internalErrorsLogged = 0;
  const noop = () => {};
  const logger: Logger = {
    debug: noop,
    info: noop,
    warn: noop,
    error: (_obj, msg) => {
      if (msg === "internal error") internalErrorsLogged++;
    },
  };
  const config = parseConfig(
    {
      grpc: { listen: "127.0.0.1:0" },
      http: { listen: "127.0.0.1:0" },
      logLevel: "silent",
      shutdownGrace: "1s",
      maxMessageBytes,
      // The handlers are the target: a fuzzer is one caller whose calls mostly fail, which
      // limits.callers.failuresPerSecond would refuse before they ran (it has its own tests).
      limits: { callers: { failuresPerSecond: 0 } },
      providers: {
        idp: {
          // Nothing listens on port 9 here: every refresh or grant fails fast (UNAVAILABLE).
          tokenEndpoint: "http://127.0.0.1:9/token",
          revocationEndpoint: "http://127.0.0.1:9/revoke",
          authorizationEndpoint: "http://127.0.0.1:9/authorize",
          deviceAuthorizationEndpoint: "http://127.0.0.1:9/device",
          redirectUris: known.redirectUris,
          tokenExchange: true,
          clientId: "fuzz",
          clientSecretEnv: "FUZZ_SECRET",
          authMethod: "client_secret_post",
          timeout: "1s",
        },
      },
      grants: { demo: { provider: "idp", scopes: ["api:read"] } },
    },
    { env: { FUZZ_SECRET: "fuzz-secret" }, readFile: () => "" },
  );
  const store = createMemoryStore();
  const server = await startServer({ config, store, logger });
  const grpcClient = createRawClient(`http://127.0.0.1:${server.grpcPort}`, 2);
  const httpClient = createRawClient(`http://127.0.0.1:${server.httpPort}`, 2);
  const failures: string[] = [];
  const byMethod: Record<string, Record<string, number>> = {};
  const byListener = { grpc: 0, http: 0 };
  const changedSessions = new Set<string>();
  const seen = new Set<string>();
  let sent = 0;
  try {
    // Seeded sessions, long-lived so that nothing refreshes them on its own.
    for (const sessionId of known.sessions) {
      const body = create(StoreUpstreamTokensRequestSchema, {
        sessionId,
        provider: "idp",
        accessToken: `at-${sessionId}`,
        refreshToken: `rt-${sessionId}`,
        expiry: { case: "expiresAt", value: timestampFromMs(Date.now() + 86_400_000) },
        subject: "alice",
      });
      const out = await grpcClient.call({
        protocol: "grpc",
        path: "/tokenvend.v1.TokenService/StoreUpstreamTokens",
        body: toBinary(StoreUpstreamTokensRequestSchema, body),
        stream: false,
      });
      if (out.code !== 0)
        throw new Error(`seeding ${sessionId} failed: ${out.code} ${out.message}`);
    }
    const before = await snapshot(store);

    const perMethod = Math.ceil(opts.inputs / methods.length);
    // What later inputs are mutated from: the corpus, and what a guided run found.
    const pools = new Map<DescMethod, { binary: Uint8Array[]; json: string[] }>(
      methods.map((m) => {
        const c = opts.corpus?.get(m.name);
        return [m, { binary: [...(c?.binary ?? [])], json: [...(c?.json ?? [])] }];
      }),
    );
    const arbitraries = new Map<DescMethod, fc.Arbitrary<RpcInput>>();
    const queue: [RpcInput, number][] = [];
    const batch = 500;
    let batchNo = 0;
    const refill = () => {
      for (const m of methods) {
        if (opts.coverage !== undefined || !arbitraries.has(m)) {
          arbitraries.set(m, inputsFor(m, pools.get(m)));
        }
        const take = Math.min(batch, perMethod - batchNo * batch);
        if (take <= 0) continue;
        const values = fc.sample(arbitraries.get(m)!, {
          seed: opts.seed + batchNo * 7919 + methods.indexOf(m),
          numRuns: take,
        });
        for (const [i, v] of values.entries()) queue.push([v, batchNo * batch + i]);
      }
      batchNo++;
      // Interleave methods so every RPC runs alongside the others.
      queue.sort((a, b) => a[1] - b[1]);
    };
    /** Sends `input` as `pick` routes it; a successful write's session is noted. */
    const send = async (input: RpcInput, pick: number) => {
      const route = routeOf(input, pick);
      const client = route.listener === "grpc" ? grpcClient : httpClient;
      const out = await client.call({
        protocol: route.protocol,
        path: `/tokenvend.v1.TokenService/${input.method.name}`,
        body: input.body,
        stream: input.method.methodKind === "server_streaming",
        http1: route.http1,
        timeoutMs: 10_000,
      });
      if (out.code === 0 && /^(StoreUpstreamTokens|RevokeSession)$/.test(input.method.name)) {
        const req = decodeInput(input);
        changedSessions.add(String(req?.sessionId ?? "?undecodable"));
      }
      return { route, out };
    };
    const one = async (input: RpcInput, pick: number) => {
      const { route, out } = await send(input, pick);
      byListener[route.listener]++;
      const counts = byMethod[input.method.name] ?? {};
      byMethod[input.method.name] = counts;
      counts[String(out.code)] = (counts[String(out.code)] ?? 0) + 1;
      const resetForSize = out.code === -1 && input.body.length > maxMessageBytes;
      if (forbidden.has(out.code) || out.code === -2 || (out.code === -1 && !resetForSize)) {
        if (failures.length < 20) {
          failures.push(
            `${route.listener} ${route.protocol}${route.http1 ? " h1" : ""}: code ${out.code} "${out.message}" for ${show(input)}`,
          );
        }
      }
      // The outcome without what varies by input (quoted values, numbers).
      const words = out.message.replace(/"[^"]*"|\d+/g, "").slice(0, 60);
      const signature = `${input.method.name} ${input.encoding} ${out.code} ${words}`;
      if (!seen.has(signature)) {
        seen.add(signature);
        opts.onNewOutcome?.(input, out);
      }
    };
    const cov = opts.coverage;
    let newCoverage = 0;
    let answered: [RpcInput, number][] = [];
    let inFlight = 0;
    let drained: (() => void) | undefined;
    let paused: Promise<void> | undefined;
    /** The answered inputs that ran new blocks join their method's pool. */
    const guide = async () => {
      // A reading must hold the batch's own work only: let the calls in flight finish first.
      if (inFlight > 0) await new Promise<void>((r) => (drained = r));
      const batch = answered;
      answered = [];
      await attribute(
        cov!,
        batch,
        ([input, pick]) => send(input, pick),
        ([input]) => {
          newCoverage++;
          const pool = pools.get(input.method)!;
          if (pool.binary.length + pool.json.length >= maxPool) return;
          if (input.encoding === "json") pool.json.push(utf8.decode(input.body));
          else pool.binary.push(input.body);
          opts.onNewCoverage?.(input);
        },
      );
    };
    const lanes = opts.concurrency ?? 32;
    await Promise.all(
      Array.from({ length: lanes }, async () => {
        for (;;) {
          while (paused !== undefined) await paused;
          if (queue.length === 0) {
            if (sent >= perMethod * methods.length || batchNo * batch >= perMethod) return;
            refill();
            if (queue.length === 0) return;
          }
          const [input, pick] = queue.shift()!;
          sent++;
          inFlight++;
          await one(input, pick);
          inFlight--;
          if (cov === undefined) continue;
          answered.push([input, pick]);
          if (inFlight === 0) drained?.();
          if (answered.length >= guidedBatch && paused === undefined) {
            paused = guide().finally(() => {
              paused = undefined;
            });
          }
        }
      }),
    );
    if (cov !== undefined && answered.length > 0) await guide();

    const after = await snapshot(store);
    const storeViolations: string[] = [];
    for (const [id, generation] of after) {
      if (before.get(id) === generation) continue;
      const [, , sessionId] = id.split("\u001f");
      if (sessionId === undefined || !changedSessions.has(sessionId)) {
        storeViolations.push(
          `${JSON.stringify(id)} moved to generation ${generation} with no successful write naming it`,
        );
      }
    }
    for (const id of before.keys()) {
      if (!after.has(id)) storeViolations.push(`${JSON.stringify(id)} disappeared`);
    }
    // Still serving, on both listeners.
    for (const [client, protocol] of [
      [grpcClient, "grpc"],
      [httpClient, "connect"],
    ] as const) {
      const alive = known.sessions.find((s) => !changedSessions.has(s));
      if (alive === undefined) break;
      const out = await client.call({
        protocol,
        path: "/tokenvend.v1.TokenService/GetValidTokens",
        body: toBinary(
          GetValidTokensRequestSchema,
          create(GetValidTokensRequestSchema, { sessionId: alive, provider: "idp" }),
        ),
        stream: false,
      });
      if (out.code !== 0)
        failures.push(
          `after the run, ${protocol} GetValidTokens failed: ${out.code} ${out.message}`,
        );
    }
    return {
      inputs: sent,
      byListener,
      byMethod,
      failures,
      internalErrorsLogged,
      storeViolations,
      outcomes: seen.size,
      seconds: (performance.now() - started) / 1000,
      newCoverage,
      blocks: cov?.blocks ?? 0,
    };
  } finally {
    grpcClient.close();
    httpClient.close();
    await server.shutdown();
  }
}
