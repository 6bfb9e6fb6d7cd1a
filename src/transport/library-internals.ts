// The only file in tokenvend that reads or patches the libraries' internals:
// undocumented shapes of @grpc/grpc-js, grpc-health-check, @grpc/proto-loader
// with @grpc/reflection, and connect-node's HTTP/1.1 response. Each is here for
// a measured cost or a wire behaviour the public API does not offer, says what
// happens when it is gone, and is pinned by test/library-internals.test.ts,
// which fails when a library update changes it. Nothing else may reach past a
// library's public API: add the next one here, with its test.

import type http from "node:http";
import { Duplex, type Writable } from "node:stream";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { HealthImplementation } from "grpc-health-check";

/**
 * grpc-js copies every message it sends into a new length-prefixed frame: for
 * one renewal pushed to 10,000 streams, 21 MB of buffers (enough to set off a
 * full GC of every stream's state) and ~8 µs per stream. Once a call's headers
 * went out, its later messages can go straight to its HTTP/2 stream as one
 * frame built once and shared by all streams, in order with what grpc-js
 * writes (both land on the same stream, synchronously). This reads two
 * grpc-js internals, the call's `call.stream` and `call.metadataSent`; when
 * they are not there (another grpc-js version, a server interceptor wrapping
 * the call) the call is written the public way.
 */
export function directStreamOf(
  call: grpc.ServerWritableStream<Buffer, Buffer>,
): Writable | undefined {
  const inner = (call as unknown as { call?: { metadataSent?: unknown; stream?: unknown } }).call;
  if (inner?.metadataSent !== true) return undefined;
  return inner.stream instanceof Duplex ? inner.stream : undefined;
}

/**
 * grpc-health-check's addToServer(), with every Watch call shown to `onWatch`
 * first (a drain must end them: they never end by themselves; past a cap they
 * are refused, and `onWatch` returns false after ending the call itself). The
 * library gets a stand-in server that has only addService(), and is trusted to
 * call it once with its service, whose handler for Watch is named `watch`.
 */
export function addHealthService(
  health: HealthImplementation,
  server: grpc.Server,
  onWatch: (call: grpc.ServerWritableStream<unknown, unknown>) => boolean,
): void {
  health.addToServer({
    addService(definition: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) {
      const watch = impl.watch as grpc.handleServerStreamingCall<unknown, unknown>;
      server.addService(definition, {
        ...impl,
        watch(call: grpc.ServerWritableStream<unknown, unknown>) {
          if (onWatch(call)) watch(call);
        },
      });
    },
  } as grpc.Server);
}

/**
 * A proto-loader package definition of a FileDescriptorSet, for
 * @grpc/reflection, listing `files` as they are. proto-loader re-encodes files
 * through protobufjs and drops their source info (the comments); reflection
 * serves the `fileDescriptorProtos` of the package's message and enum entries,
 * so those are swapped for the original bytes.
 */
export function packageWithFiles(
  descriptorSet: Buffer,
  files: readonly Buffer[],
): protoLoader.PackageDefinition {
  const pkg = protoLoader.loadFileDescriptorSetFromBuffer(descriptorSet);
  for (const [name, def] of Object.entries(pkg)) {
    // Message and enum entries list files; service entries do not.
    if ("fileDescriptorProtos" in def && Array.isArray(def.fileDescriptorProtos)) {
      pkg[name] = Object.assign({}, def, { fileDescriptorProtos: files });
    }
  }
  return pkg;
}

/**
 * A request that connect-node rejects before its body was read (readMaxBytes)
 * is destroyed by it, which resets the connection: this tells an HTTP/1.1
 * client not to reuse it, by patching the response's writeHead, which
 * connect-node calls to answer.
 */
export function closeWhenBodyUnread(req: http.IncomingMessage, res: http.ServerResponse): void {
  const writeHead = res.writeHead;
  res.writeHead = function (this: typeof res, ...args: Parameters<typeof writeHead>) {
    if (!req.complete && !res.headersSent) res.setHeader("connection", "close");
    return writeHead.apply(this, args);
  } as typeof writeHead;
}

/**
 * The connection (its TLS socket) a grpc-js call arrived on, read from the
 * server call's private `stream.session.socket`. grpc-js's getAuthContext()
 * reads the peer certificate again on every call (~40 µs of server CPU per
 * call with a client certificate, measured with `BENCH_AUTH=mtls npm run
 * bench`); a certificate cannot change within a connection, so it is read
 * once per connection, keyed by this (and the peer's address with it). When
 * it is gone, every call reads them.
 */
export function connectionOf(call: grpc.ServerInterceptingCallInterface): object | undefined {
  const socket = (call as unknown as { stream?: { session?: { socket?: unknown } } }).stream
    ?.session?.socket;
  return typeof socket === "object" && socket !== null ? socket : undefined;
}

/**
 * Node's HTTP/1.1 server enforces headersTimeout and requestTimeout only on the
 * connections it tracks, and starts tracking (and the interval that checks
 * them) when the server emits "listening" (lib/_http_server.js,
 * setupConnectionsTracking). The HTTP listener's http.Server never listens: a
 * net.Server reads each connection's first bytes and hands it over with
 * emit("connection"), so without this a client sending one header line every
 * few seconds keeps its connection for ever. Call before the first connection.
 * When it is gone, the timeouts are not enforced and the test says so.
 */
export function trackRequestTimeouts(server: http.Server): void {
  server.emit("listening");
}

/**
 * connect-es answers a request whose bytes do not decode as protobuf with
 * INTERNAL "parse binary: …" (@connectrpc/connect, protocol/serialization.js);
 * the gRPC listener, grpc-go's status for a bad argument and connect-go say
 * INVALID_ARGUMENT, and the client's mistake must not read as the server's.
 * This turns such an error into INVALID_ARGUMENT `cannot decode <message>`, in
 * place (connect-es still holds it and writes it). For unary calls connect-es
 * decodes before any interceptor runs, and aborts the call's context with that
 * very error, synchronously, just before writing it (the Connect, gRPC and
 * gRPC-Web handler factories): `reclassifyOnAbort` catches it there, from the
 * request gate. For server streams the error reaches the interceptors, whose
 * outermost one passes it here. When this stops working the caller gets
 * INTERNAL again, and the tests say so.
 *
 * JSON that does not decode is INVALID_ARGUMENT already, but its message is
 * protobuf-es's and JSON.parse's, quoting the body: token material in an error,
 * and, for a body with a character outside the BMP, V8 quotes half of it (a
 * lone surrogate) and connect-es's gRPC and gRPC-Web trailers throw on it
 * (encodeURIComponent), so the call never gets an answer (found by the fuzz
 * run). It becomes `cannot decode <message> from JSON`, naming the field when
 * protobuf-es did and never a value.
 */
export function undecodableAsInvalidArgument(err: unknown, method: DescMethod): void {
  if (!(err instanceof ConnectError)) return;
  let rawMessage: string | undefined;
  if (err.code === Code.Internal && err.rawMessage.startsWith("parse binary:")) {
    rawMessage = `cannot decode ${method.input.typeName}`;
  } else if (
    err.code === Code.InvalidArgument &&
    err.details.length === 0 &&
    /^cannot decode .* from JSON/s.test(err.rawMessage)
  ) {
    const field = /cannot decode (field [A-Za-z0-9_.]+) from JSON/.exec(err.rawMessage)?.[1];
    rawMessage = `cannot decode ${method.input.typeName} from JSON${field ? `: ${field}` : ""}`;
  }
  if (rawMessage === undefined || rawMessage === err.rawMessage) return;
  Object.assign(err, {
    code: Code.InvalidArgument,
    rawMessage,
    message: new ConnectError(rawMessage, Code.InvalidArgument).message,
  });
}

/** undecodableAsInvalidArgument on the reason the call's context aborts with. */
export function reclassifyOnAbort(ctx: HandlerContext): void {
  const signal = ctx.signal;
  signal.addEventListener("abort", () => undecodableAsInvalidArgument(signal.reason, ctx.method), {
    once: true,
  });
}
