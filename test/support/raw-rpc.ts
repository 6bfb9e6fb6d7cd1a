// Any bytes as the body of an RPC, on every protocol a caller may speak to either listener,
// and the status that came back: what bad-input tests and the fuzz run send. It frames the
// bytes (or not) as the protocol does and nothing more: no client library gets to refuse
// them first. HTTP/2 goes over a few reused h2c sessions, HTTP/1.1 over a keep-alive agent,
// so many calls cost little.
//
//   gRPC        application/grpc[+json]        h2c, on either listener
//   gRPC-Web    application/grpc-web[+json]    HTTP/1.1, the HTTP listener
//   Connect     application/proto|json         unary; HTTP/1.1 or h2c, the HTTP listener
//   Connect     application/connect+proto|json server streams; HTTP/1.1 or h2c

import http from "node:http";
import http2 from "node:http2";
import { codeFromString } from "@connectrpc/connect/protocol-connect";

export type RawProtocol =
  | "grpc"
  | "grpc+json"
  | "grpc-web"
  | "grpc-web+json"
  | "connect"
  | "connect+json";

export interface RawCall {
  readonly protocol: RawProtocol;
  /** "/tokenvend.v1.TokenService/GetToken" */
  readonly path: string;
  readonly body: Uint8Array;
  /** Server streaming: Connect's streaming content type and envelope. */
  readonly stream: boolean;
  /** HTTP/1.1 instead of h2c (not for gRPC). */
  readonly http1?: boolean;
  readonly headers?: Readonly<Record<string, string>>;
  /** Gives up after this (outcome code -2); a stream that answers is cancelled at its first message. */
  readonly timeoutMs?: number;
}

export interface RawOutcome {
  /**
   * The status as a gRPC code (0 OK, also for a stream cancelled at its first message); -1 when
   * none could be read (the stream was reset), -2 when timeoutMs passed.
   */
  readonly code: number;
  readonly message: string;
  /** HTTP status. */
  readonly status: number;
  /** Messages received before the status (streams). */
  readonly messages: number;
}

function envelope(flags: number, body: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = flags;
  out.writeUInt32BE(body.length, 1);
  out.set(body, 5);
  return out;
}

/** The envelopes of a body: [flags, payload][]; a truncated tail is dropped. */
function envelopes(body: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  for (let at = 0; at + 5 <= body.length; ) {
    const len = body.readUInt32BE(at + 1);
    if (at + 5 + len > body.length) break;
    out.push([body[at] ?? 0, body.subarray(at + 5, at + 5 + len)]);
    at += 5 + len;
  }
  return out;
}

/** A whole message envelope (not an end-of-stream or trailer one) has arrived. */
const hasMessage = (body: Buffer) => envelopes(body).some(([f]) => (f & 0x82) === 0);

function contentType(c: RawCall): string {
  switch (c.protocol) {
    case "grpc":
      return "application/grpc";
    case "grpc+json":
      return "application/grpc+json";
    case "grpc-web":
      return "application/grpc-web+proto";
    case "grpc-web+json":
      return "application/grpc-web+json";
    case "connect":
      return c.stream ? "application/connect+proto" : "application/proto";
    case "connect+json":
      return c.stream ? "application/connect+json" : "application/json";
  }
}

function requestBody(c: RawCall): Uint8Array {
  if (c.protocol.startsWith("connect") && !c.stream) return c.body;
  return envelope(0, c.body);
}

function statusFromHeaders(h: Record<string, string | string[] | undefined>) {
  const code = h["grpc-status"];
  if (code === undefined) return undefined;
  const m = h["grpc-message"];
  return { code: Number(code), message: decodeURIComponent(String(m ?? "")) };
}

/** Reads what came back, in the protocol's own form. */
function outcome(
  c: RawCall,
  status: number,
  headers: Record<string, string | string[] | undefined>,
  trailers: Record<string, string | string[] | undefined>,
  body: Buffer,
): RawOutcome {
  const frames = c.protocol.startsWith("connect") && !c.stream ? [] : envelopes(body);
  const messages = frames.filter(([f]) => (f & 0x82) === 0).length;
  if (c.protocol.startsWith("grpc-web")) {
    const trailer = frames.find(([f]) => (f & 0x80) !== 0)?.[1].toString("latin1");
    const fromBody =
      trailer === undefined
        ? undefined
        : statusFromHeaders(
            Object.fromEntries(
              trailer
                .split("\r\n")
                .filter(Boolean)
                .map((l) => [
                  l.slice(0, l.indexOf(":")).toLowerCase(),
                  l.slice(l.indexOf(":") + 1).trim(),
                ]),
            ),
          );
    const s = statusFromHeaders(headers) ?? fromBody;
    return { code: s?.code ?? -1, message: s?.message ?? "", status, messages };
  }
  if (c.protocol.startsWith("grpc")) {
    const s = statusFromHeaders(headers) ?? statusFromHeaders(trailers);
    return { code: s?.code ?? -1, message: s?.message ?? "", status, messages };
  }
  if (c.stream) {
    const end = frames.find(([f]) => (f & 0x02) !== 0)?.[1];
    const json =
      end === undefined ? undefined : (JSON.parse(end.toString("utf8")) as { error?: ConnectJson });
    if (json === undefined) return { code: -1, message: "", status, messages };
    return errorOutcome(json.error, status, messages);
  }
  if (status === 200) return { code: 0, message: "", status, messages: 1 };
  let json: ConnectJson | undefined;
  try {
    json = JSON.parse(body.toString("utf8")) as ConnectJson;
  } catch {
    json = undefined;
  }
  return errorOutcome(json ?? { code: `http ${status}` }, status, 0);
}

interface ConnectJson {
  code?: string;
  message?: string;
}

function errorOutcome(e: ConnectJson | undefined, status: number, messages: number): RawOutcome {
  if (e === undefined) return { code: 0, message: "", status, messages };
  return { code: codeFromString(e.code ?? "") ?? -1, message: e.message ?? "", status, messages };
}

export interface RawClient {
  call(c: RawCall): Promise<RawOutcome>;
  close(): void;
}

/**
 * A client for `origin` ("http://127.0.0.1:PORT") that spreads HTTP/2 calls over `sessions`
 * h2c connections (reconnecting one that closed) and HTTP/1.1 calls over a keep-alive agent.
 */
export function createRawClient(origin: string, sessions = 2): RawClient {
  const pool: (http2.ClientHttp2Session | undefined)[] = Array.from({ length: sessions });
  let next = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const session = () => {
    const i = next++ % pool.length;
    let s = pool[i];
    if (s === undefined || s.closed || s.destroyed) {
      s = http2.connect(origin);
      s.on("error", () => {});
      pool[i] = s;
    }
    return s;
  };
  const h2 = (c: RawCall) =>
    new Promise<RawOutcome>((resolve) => {
      const stream = session().request({
        ":method": "POST",
        ":path": c.path,
        "content-type": contentType(c),
        te: "trailers",
        ...c.headers,
      });
      let status = 0;
      let headers: Record<string, string | string[] | undefined> = {};
      let trailers: Record<string, string | string[] | undefined> = {};
      const chunks: Buffer[] = [];
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        headers = h;
      });
      stream.on("trailers", (h) => {
        trailers = h;
      });
      const timer = setTimeout(() => {
        timedOut = true;
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }, c.timeoutMs ?? 30_000);
      let timedOut = false;
      let first = false;
      stream.on("data", (d: Buffer) => {
        chunks.push(d);
        // A stream that answers stays open (WatchToken): its first message is enough.
        if (c.stream && status === 200 && hasMessage(Buffer.concat(chunks))) {
          first = true;
          stream.close(http2.constants.NGHTTP2_CANCEL);
        }
      });
      stream.on("error", () => {});
      stream.once("close", () => {
        clearTimeout(timer);
        if (first) resolve({ code: 0, message: "", status, messages: 1 });
        else if (timedOut) resolve({ code: -2, message: "timeout", status, messages: 0 });
        else if (status === 0) {
          resolve({ code: -1, message: `reset ${stream.rstCode}`, status, messages: 0 });
        } else resolve(outcome(c, status, headers, trailers, Buffer.concat(chunks)));
      });
      stream.end(requestBody(c));
    });
  const h1 = (c: RawCall, url: URL) =>
    new Promise<RawOutcome>((resolve) => {
      const body = requestBody(c);
      const req = http.request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          method: "POST",
          path: c.path,
          headers: { "content-type": contentType(c), "content-length": body.length, ...c.headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (d: Buffer) => {
            chunks.push(d);
            if (c.stream && res.statusCode === 200 && hasMessage(Buffer.concat(chunks))) {
              res.removeAllListeners("end");
              req.destroy();
              resolve({ code: 0, message: "", status: 200, messages: 1 });
            }
          });
          res.on("error", () => resolve({ code: -1, message: "aborted", status: 0, messages: 0 }));
          res.on("end", () =>
            resolve(
              outcome(c, res.statusCode ?? 0, res.headers, res.trailers, Buffer.concat(chunks)),
            ),
          );
        },
      );
      req.setTimeout(c.timeoutMs ?? 30_000, () => {
        resolve({ code: -2, message: "timeout", status: 0, messages: 0 });
        req.destroy();
      });
      req.on("error", (e) => resolve({ code: -1, message: e.message, status: 0, messages: 0 }));
      req.end(body);
    });
  const url = new URL(origin);
  return {
    call: (c) =>
      c.http1 === true && c.protocol !== "grpc" && c.protocol !== "grpc+json" ? h1(c, url) : h2(c),
    close() {
      for (const s of pool) s?.destroy();
      agent.destroy();
    },
  };
}
