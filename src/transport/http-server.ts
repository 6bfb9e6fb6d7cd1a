// The HTTP listener: Connect, gRPC-Web and gRPC through connect-node, on one
// port that speaks HTTP/1.1 and h2c (HTTP/2 without TLS, prior knowledge).
// Node's http2.createServer({ allowHTTP1: true }) only falls back to HTTP/1.1
// through TLS ALPN; on plain TCP it answers an HTTP/1.1 request with HTTP/2
// frames (checked on Node 24). So a net.Server reads the first bytes of each
// connection: the HTTP/2 client preface goes to an http2 server, anything else
// to an http server, both serving the same Connect handler. With TLS, ALPN
// decides instead. Before a request reaches Connect, the guard checks its host
// and origin (http-guard.ts) and the authenticate hook its caller, before the
// body is read (a refusal is written by http-refusal.ts).
//
// Limits (connection-limits.ts): a connection must send its first bytes and,
// on HTTP/1.1, its headers within headersTimeoutMs, and every request its body
// within requestTimeoutMs (HTTP/1.1: Node's own timeouts, 408; HTTP/2: the
// stream is reset); at most maxConnections are open; HTTP/2 sessions are
// capped in streams and memory and closed when idle.

import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import type { DescService } from "@bufbuild/protobuf";
import {
  ConnectError,
  type ConnectRouter,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  type Authenticate,
  authenticatedKey,
  headerTimeoutMs,
  isOpenPath,
  peerOf,
  refusalOf,
  verifiedCertificate,
} from "./authentication.ts";
import type { HttpConnectionLimits } from "./connection-limits.ts";
import { createListenerDrain } from "./drain.ts";
import { createHttpGuard, type HttpGuardOptions } from "./http-guard.ts";
import { writeRefusal } from "./http-refusal.ts";
import {
  closeWhenBodyUnread,
  reclassifyOnAbort,
  trackRequestTimeouts,
  undecodableAsInvalidArgument,
} from "./library-internals.ts";
import { listenOn } from "./plain-http.ts";
import type {
  ListenAddress,
  ServiceRegistration,
  ServiceRegistrations,
} from "./service-registration.ts";
import type { TlsFiles } from "./tls-files.ts";
import { createWireErrors, type WireErrors } from "./wire-errors.ts";

export interface HttpServerOptions<T extends readonly DescService[]> {
  readonly services: ServiceRegistrations<T>;
  /** Connect interceptors, first = outermost, exactly as the gRPC listener runs them. */
  readonly interceptors?: readonly Interceptor[];
  /** Largest request message accepted (per message, after decompression). */
  readonly readMaxBytes: number;
  /** What errors become on the wire: give both listeners the same. Default createWireErrors(). */
  readonly errors?: WireErrors;
  /** Connection and request limits; without them Node's defaults (see defaultLimits). */
  readonly limits?: HttpConnectionLimits;
  /** Runs for every call but health's before its body is read (authentication.ts). */
  readonly authenticate?: Authenticate;
  /** Host / :authority allow-list and CORS; without it any host and no cross-origin rule. */
  readonly guard?: HttpGuardOptions;
  /** TLS (mTLS with a client CA) from files that are reloaded when they change. */
  readonly tls?: TlsFiles;
}

export interface HttpServer {
  /** Binds "host:port" ("[::1]:0" for IPv6); port 0 picks a free port. */
  listen(hostPort: string): Promise<ListenAddress>;
  /**
   * Stops accepting connections, sends HTTP/2 GOAWAY, closes idle HTTP/1.1
   * connections and lets in-flight calls finish for up to graceMs; then aborts
   * the rest with UNAVAILABLE and closes every connection.
   */
  close(graceMs: number): Promise<void>;
}

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Node's own defaults, but for the first bytes (10 s) and a connection cap. */
const defaultLimits: HttpConnectionLimits = {
  headersTimeoutMs: 60_000,
  requestTimeoutMs: 300_000,
  keepAliveTimeoutMs: 5_000,
  maxConnections: Number.POSITIVE_INFINITY,
  maxConcurrentStreams: 4_294_967_295,
  maxSessionMemoryMB: 10,
  idleTimeoutMs: 300_000,
};

export function createHttpServer<const T extends readonly DescService[]>(
  opts: HttpServerOptions<T>,
): HttpServer {
  const { readMaxBytes } = opts;
  if (!Number.isInteger(readMaxBytes) || readMaxBytes < 1) {
    throw new RangeError(`readMaxBytes must be a positive integer; got ${readMaxBytes}`);
  }
  const limits = opts.limits ?? defaultLimits;
  const services: readonly ServiceRegistration<T[number]>[] = opts.services;
  let draining = false;
  // HTTP/1.1 sockets and their in-flight requests: idle ones can close at once.
  const h1Sockets = new Map<net.Socket, number>();
  // HTTP/2 sessions and their open streams: idle ones time out, quiet streams do not.
  const h2Sessions = new Map<http2.Http2Session, number>();
  const sniffing = new Set<net.Socket>();
  let closed: Promise<void> | undefined;
  const drain = createListenerDrain({
    stopAccepting() {
      draining = true;
      closed = new Promise<void>((resolve) => listener.close(() => resolve()));
      h1.close(); // stops Node's timeout checks (it never listened: nothing else to close)
      for (const s of sniffing) s.destroy();
      for (const s of h2Sessions.keys()) s.close(); // GOAWAY: no new streams, running ones finish
      for (const [s, n] of h1Sockets) if (n === 0) s.destroy();
      return closed;
    },
    async forceClose() {
      for (const s of h2Sessions.keys()) s.destroy();
      for (const s of h1Sockets.keys()) s.destroy();
      await closed;
    },
  });
  const wire = wireErrors(opts.errors ?? createWireErrors());
  // The caller of each authenticated request, for the handler's context values.
  const callers = new WeakMap<object, unknown>();
  const handler = connectNodeAdapter({
    contextValues(req) {
      const values = createContextValues();
      const caller = callers.get(req);
      return caller !== undefined ? values.set(authenticatedKey, caller) : values;
    },
    routes(router: ConnectRouter) {
      for (const s of services) router.service(s.desc, s.impl);
    },
    readMaxBytes,
    // Bytes that are not the request message are the caller's mistake, as on the gRPC listener.
    requestGate: reclassifyOnAbort,
    interceptors:
      opts.interceptors === undefined || opts.interceptors.length === 0
        ? [wire]
        : [wire, ...opts.interceptors, wire],
    shutdownSignal: drain.shutdownSignal,
  });

  const h1 = http.createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // How often Node looks for requests past their timeouts.
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
    },
    (req, res) => {
      const socket = req.socket;
      socket.setTimeout(0); // headers are in: Node's request and keep-alive timeouts apply
      h1Sockets.set(socket, (h1Sockets.get(socket) ?? 0) + 1);
      if (draining) res.setHeader("connection", "close");
      closeWhenBodyUnread(req, res);
      res.once("close", () => {
        const n = (h1Sockets.get(socket) ?? 1) - 1;
        if (h1Sockets.has(socket)) h1Sockets.set(socket, n);
        if (draining && n === 0) socket.end();
      });
      serve(req, res);
    },
  );
  trackRequestTimeouts(h1);
  const guard = opts.guard !== undefined ? createHttpGuard(opts.guard) : undefined;
  const { authenticate } = opts;
  const serve = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    if (guard?.(req, res) === true) return;
    const path = (req.url ?? "").split("?")[0] ?? "";
    if (authenticate === undefined || isOpenPath(path)) {
      handler(req, res);
      return;
    }
    const arrived = Date.now();
    authenticate({
      header: (name) => {
        const v = req.headers[name];
        return Array.isArray(v) ? v[0] : v;
      },
      get certificate() {
        return verifiedCertificate(req.socket);
      },
      peer: peerOf(req.socket),
      path,
      timeoutMs() {
        const given = headerTimeoutMs(this.header);
        return given === undefined ? undefined : given - (Date.now() - arrived);
      },
    }).then(
      (caller) => {
        callers.set(req, caller);
        handler(req, res);
      },
      (err: unknown) => {
        if (!res.headersSent) writeRefusal(req, res, refusalOf(err));
      },
    );
  };
  const h2 = http2.createServer(
    {
      settings: { maxConcurrentStreams: limits.maxConcurrentStreams },
      maxSessionMemory: limits.maxSessionMemoryMB,
    },
    serve,
  );
  h2.on("session", (session) => {
    h2Sessions.set(session, 0);
    session.setTimeout(limits.idleTimeoutMs, () => {
      if (h2Sessions.get(session) === 0) session.close();
    });
    session.once("close", () => h2Sessions.delete(session));
  });
  h2.on("stream", (stream) => {
    const session = stream.session;
    if (session === undefined || !h2Sessions.has(session)) return;
    h2Sessions.set(session, (h2Sessions.get(session) ?? 0) + 1);
    // The body deadline: a request still arriving then is reset (HTTP/1.1 gets Node's 408).
    const deadline = setTimeout(() => {
      if (stream.state.remoteClose !== 1) stream.close(http2.constants.NGHTTP2_CANCEL);
    }, limits.requestTimeoutMs);
    stream.once("close", () => {
      clearTimeout(deadline);
      const n = h2Sessions.get(session);
      if (n !== undefined) h2Sessions.set(session, n - 1);
    });
  });

  /** Hands a connection to the HTTP/2 or the HTTP/1.1 server. */
  const route = (socket: net.Socket, isH2: boolean) => {
    if (isH2) {
      socket.setTimeout(0); // the session's own idle timeout takes over
      // The session reads the unshifted bytes itself, then reads the handle:
      // resuming here would let the stream swallow data meant for it.
      h2.emit("connection", socket);
    } else {
      // Until its first request's headers are in (Node's headers timeout starts with them).
      socket.setTimeout(limits.headersTimeoutMs, () => socket.destroy());
      h1Sockets.set(socket, 0);
      socket.once("close", () => h1Sockets.delete(socket));
      h1.emit("connection", socket);
      socket.resume();
    }
  };
  const sniff = (socket: net.Socket) => {
    // Errors end the socket anyway; an unhandled one would end the process.
    socket.on("error", () => {});
    sniffing.add(socket);
    // A client that never sends its request (headers included) is not one.
    socket.setTimeout(limits.headersTimeoutMs, () => socket.destroy());
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, h2Preface.length);
      const isH2 = head.subarray(0, n).equals(h2Preface.subarray(0, n));
      if (isH2 && n < h2Preface.length) return; // a prefix of the preface: read on
      socket.off("data", onData);
      sniffing.delete(socket);
      if (draining) {
        socket.destroy();
        return;
      }
      // Give the bytes back, then hand the socket over, as documented for the
      // servers' "connection" event.
      socket.pause();
      socket.unshift(head);
      route(socket, isH2);
    };
    socket.on("data", onData);
    socket.once("close", () => sniffing.delete(socket));
  };
  const tlsFiles = opts.tls;
  const listener =
    tlsFiles === undefined
      ? net.createServer(sniff)
      : tls.createServer(
          {
            ...tlsFiles.current(),
            ALPNProtocols: ["h2", "http/1.1"],
            requestCert: tlsFiles.options.clientCaFile !== undefined,
            rejectUnauthorized: tlsFiles.options.requireClientCert,
            handshakeTimeout: limits.headersTimeoutMs,
          },
          (socket) => {
            socket.on("error", () => {});
            if (draining) socket.destroy();
            else route(socket, socket.alpnProtocol === "h2");
          },
        );
  // Past the cap Node closes a new connection at once.
  if (Number.isFinite(limits.maxConnections)) listener.maxConnections = limits.maxConnections;
  if (tlsFiles !== undefined) {
    tlsFiles.onChange((ctx) => (listener as tls.Server).setSecureContext(ctx));
    // A failed handshake (no client certificate under mTLS) is the client's problem.
    listener.on("tlsClientError", () => {});
  }

  return {
    listen: (hostPort) => listenOn(listener, hostPort),
    close: (graceMs) => drain.drain(graceMs),
  };
}

/**
 * Applies the listener's WireErrors to a call's error, for unary calls and for
 * errors raised while a stream runs. It runs outermost and innermost: handlers'
 * errors reach the other interceptors as the caller will see them, and an
 * interceptor's own failure is mapped too. A stream whose handler returns
 * because its signal aborted (shutdown, deadline) ends with the abort's reason,
 * e.g. UNAVAILABLE, rather than OK: the caller must know to reconnect, as on
 * the gRPC listener.
 */
function wireErrors(errors: WireErrors): Interceptor {
  return (next) => async (req) => {
    const wire = (err: unknown) => {
      undecodableAsInvalidArgument(err, req.method);
      return errors(err, req.signal, req.method);
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      throw wire(err);
    }
    if (!res.stream) return res;
    const source = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* source;
        } catch (err) {
          throw wire(err);
        }
        if (req.signal.aborted && req.signal.reason instanceof ConnectError) {
          throw req.signal.reason;
        }
      })(),
    };
  };
}
