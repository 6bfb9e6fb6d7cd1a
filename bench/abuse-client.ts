// The abusive callers of `npm run bench:abuse` (bench/abuse.ts), all at once in one process:
// distinct sessions stored and read, an unknown-session flood, a minimum validity the provider's
// tokens cannot meet, connections that send a header line a second or nothing at all, and one
// client opening WatchToken streams until one is refused. Started and stopped over IPC; reports
// what each got.

import net from "node:net";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  GetValidTokensRequestSchema,
  GetValidTokensResponseSchema,
  StoreUpstreamTokensRequestSchema,
  StoreUpstreamTokensResponseSchema,
  TokenService,
  WatchTokenRequestSchema,
  WatchTokenResponseSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { createGrpcJsClient, type GrpcCallError } from "../test/support/grpc-client.ts";

export interface AbuseSettings {
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly seconds: number;
  readonly sessions: number;
  readonly tokenChars: number;
  readonly slowConnections: number;
  readonly idleConnections: number;
  readonly streamsMax: number;
  /** The session flood stops when the replica's RSS passes this. */
  readonly rssStopBytes: number;
  /** What every abusive call presents (`Bearer <API key>`)... */
  readonly authorization: string;
  /** ...but the stream opener's, a caller of its own: the floods' failures would stop it first. */
  readonly streamerAuthorization: string;
}

export interface AbuseReport {
  sessionsStored: number;
  sessionsRead: number;
  sessionsStoppedBy: string;
  storeCodes: Record<string, number>;
  readCodes: Record<string, number>;
  unknownCalls: number;
  unknownCodes: Record<string, number>;
  minValidityCalls: number;
  minValidityCodes: Record<string, number>;
  slowOpened: number;
  slowClosed: number;
  slowClosedMedianMs: number;
  idleOpened: number;
  idleHttpClosed: number;
  idleGrpcClosed: number;
  /** Median time from opening to the server's close, ms (NaN when none closed). */
  idleHttpClosedMedianMs: number;
  idleGrpcClosedMedianMs: number;
  streamsOpened: number;
  streamsRefusal: string;
}

const count = (m: Record<string, number>, code: number | string) => {
  m[String(code)] = (m[String(code)] ?? 0) + 1;
};
const codeOf = (err: unknown) => (err as GrpcCallError).code ?? "?";
/** Counts the call's gRPC code in `codes`; true when it succeeded. */
const tally = (call: Promise<unknown>, codes: Record<string, number>) =>
  call.then(
    () => {
      count(codes, 0);
      return true;
    },
    (err: unknown) => {
      count(codes, codeOf(err));
      return false;
    },
  );

async function run(s: AbuseSettings, stopped: AbortSignal, rss: () => number) {
  const address = `127.0.0.1:${s.grpcPort}`;
  // Separate connections, as separate abusive clients would have.
  const channel = (n: number, authorization = s.authorization) =>
    createGrpcJsClient(TokenService, address, { authorization }, undefined, {
      "grpc.channel_id": n,
    } as never);
  const r: AbuseReport = {
    sessionsStored: 0,
    sessionsRead: 0,
    sessionsStoppedBy: "",
    storeCodes: {},
    readCodes: {},
    unknownCalls: 0,
    unknownCodes: {},
    minValidityCalls: 0,
    minValidityCodes: {},
    slowOpened: 0,
    slowClosed: 0,
    slowClosedMedianMs: Number.NaN,
    idleOpened: 0,
    idleHttpClosed: 0,
    idleGrpcClosed: 0,
    idleHttpClosedMedianMs: Number.NaN,
    idleGrpcClosedMedianMs: Number.NaN,
    streamsOpened: 0,
    streamsRefusal: "",
  };
  const clients = [channel(1), channel(2), channel(3), channel(4)];
  const store = (c: (typeof clients)[number], sessionId: string) =>
    c.unary(
      "StoreUpstreamTokens",
      StoreUpstreamTokensRequestSchema,
      StoreUpstreamTokensResponseSchema,
    )(
      create(StoreUpstreamTokensRequestSchema, {
        sessionId,
        provider: "idp",
        accessToken: `at-${sessionId}-${"a".repeat(s.tokenChars)}`,
        refreshToken: `rt-${sessionId}`,
        expiry: { case: "expiresAt", value: timestampFromMs(Date.now() + 3_600_000) },
      }),
      { deadlineMs: 10_000 },
    );
  const get = (c: (typeof clients)[number], sessionId: string, minValiditySeconds = 0) =>
    c.unary(
      "GetValidTokens",
      GetValidTokensRequestSchema,
      GetValidTokensResponseSchema,
    )(create(GetValidTokensRequestSchema, { sessionId, provider: "idp", minValiditySeconds }), {
      deadlineMs: 10_000,
    });
  const lanes = (n: number, f: (lane: number) => Promise<void>) =>
    Promise.all(Array.from({ length: n }, (_, i) => f(i)));

  // Distinct sessions, stored then read, until the count, the time or the RSS stop.
  let next = 0;
  const flood = lanes(48, async (lane) => {
    const c = clients[lane % 2]!;
    while (!stopped.aborted) {
      if (next >= s.sessions) {
        r.sessionsStoppedBy ||= `all ${s.sessions} stored`;
        return;
      }
      if (rss() > s.rssStopBytes) {
        r.sessionsStoppedBy ||= `stopped at ${next}: replica RSS passed ${(s.rssStopBytes / 2 ** 20).toFixed(0)} MB (twice the budget)`;
        return;
      }
      const id = `flood-${next++}`;
      if (!(await tally(store(c, id), r.storeCodes))) continue;
      r.sessionsStored++;
      if (await tally(get(c, id), r.readCodes)) r.sessionsRead++;
    }
    r.sessionsStoppedBy ||= `the abuse phase ended at ${next} (time, not memory)`;
  });
  const unknown = lanes(8, async (lane) => {
    const c = clients[2 + (lane % 2)]!;
    while (!stopped.aborted) {
      r.unknownCalls++;
      await tally(get(c, `nobody-${Math.random().toString(36).slice(2)}`), r.unknownCodes);
    }
  });
  await store(clients[3]!, "minvalidity-victim");
  const minValidity = lanes(4, async () => {
    while (!stopped.aborted) {
      r.minValidityCalls++;
      await tally(get(clients[3]!, "minvalidity-victim", 604_800), r.minValidityCodes);
    }
  });

  // Connections that send a header line a second, or nothing.
  const opened = performance.now();
  const closedAfter: number[] = [];
  const idleHttpAfter: number[] = [];
  const idleGrpcAfter: number[] = [];
  const sockets: net.Socket[] = [];
  const connect = (port: number, onClose: () => void) => {
    const sock = net.connect(port, "127.0.0.1");
    sock.on("error", () => {});
    sock.on("data", () => {});
    sock.once("close", onClose);
    sockets.push(sock);
    return sock;
  };
  for (let i = 0; i < s.slowConnections; i++) {
    r.slowOpened++;
    const sock = connect(s.httpPort, () => {
      if (!stopped.aborted) {
        r.slowClosed++;
        closedAfter.push(performance.now() - opened);
      }
    });
    sock.write("POST /tokenvend.v1.TokenService/GetToken HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    const timer = setInterval(
      () => (sock.destroyed ? clearInterval(timer) : sock.write(`x-slow-${i}: 1\r\n`)),
      1_000,
    );
    stopped.addEventListener("abort", () => clearInterval(timer));
  }
  for (let i = 0; i < s.idleConnections; i++) {
    r.idleOpened++;
    connect(s.httpPort, () => {
      if (stopped.aborted) return;
      r.idleHttpClosed++;
      idleHttpAfter.push(performance.now() - opened);
    });
    connect(s.grpcPort, () => {
      if (stopped.aborted) return;
      r.idleGrpcClosed++;
      idleGrpcAfter.push(performance.now() - opened);
    });
  }

  // One client opening streams until one is refused (or waits: a per-connection limit).
  const streamer = channel(9, s.streamerAuthorization);
  await store(streamer, "stream-victim");
  const streams: { cancel(): void }[] = [];
  const opening = (async () => {
    while (!stopped.aborted && streams.length < s.streamsMax) {
      const batch = Array.from({ length: 250 }, () => {
        const st = streamer.stream(
          "WatchToken",
          WatchTokenRequestSchema,
          WatchTokenResponseSchema,
          create(WatchTokenRequestSchema, {
            target: { case: "session", value: { sessionId: "stream-victim", provider: "idp" } },
          }),
        );
        st.call.on("error", () => {});
        streams.push(st);
        return new Promise<string>((resolve) => {
          const timer = setTimeout(() => resolve("waiting"), 5_000);
          st.call.once("data", () => {
            clearTimeout(timer);
            resolve("ok");
          });
          st.call.once("error", (e: GrpcCallError) => {
            clearTimeout(timer);
            resolve(`code ${e.code}: ${e.details}`);
          });
        });
      });
      const outcomes = await Promise.all(batch);
      r.streamsOpened += outcomes.filter((o) => o === "ok").length;
      const refusal = outcomes.find((o) => o !== "ok");
      if (refusal !== undefined) {
        r.streamsRefusal =
          refusal === "waiting"
            ? "the next ones got no answer within 5 s: queued by the client at the connection's stream limit"
            : `refused with ${refusal}`;
        return;
      }
    }
    r.streamsRefusal ||= `none refused up to ${s.streamsMax}`;
  })();

  await new Promise((resolve) => stopped.addEventListener("abort", resolve));
  await Promise.all([flood, unknown, minValidity, opening]);
  const median = (xs: number[]) =>
    xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
  r.slowClosedMedianMs = median(closedAfter);
  r.idleHttpClosedMedianMs = median(idleHttpAfter);
  r.idleGrpcClosedMedianMs = median(idleGrpcAfter);
  for (const st of streams) st.cancel();
  for (const sock of sockets) sock.destroy();
  for (const c of [...clients, streamer]) c.close();
  return r;
}

let latestRss = 0;
const stop = new AbortController();
let report: Promise<AbuseReport> | undefined;
process.on("disconnect", () => process.exit(1));
process.on("message", (m: { cmd: string; settings?: AbuseSettings; rss?: number }) => {
  if (m.cmd === "start" && m.settings !== undefined) {
    report = run(m.settings, stop.signal, () => latestRss);
  } else if (m.cmd === "rss") {
    latestRss = m.rss ?? 0;
  } else if (m.cmd === "stop") {
    stop.abort();
    void report?.then((r) => process.send!(r));
  }
});
