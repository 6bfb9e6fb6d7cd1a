// The gRPC listener: @grpc/grpc-js serving Connect service implementations,
// next to grpc.health.v1 and server reflection. Handlers are written once, as a
// Connect ServiceImpl; grpcServiceOf adapts each grpc-js call the way Connect's
// own gRPC handler would: a HandlerContext (headers from metadata, deadline,
// context values, a signal that aborts on cancel and on completion), the same
// interceptors, and the same error mapping, with details in
// grpc-status-details-bin. Unary and server-streaming methods only: the contract
// has no client or bidi streams, and an adapter refuses them loudly.

import { Duplex, type Writable } from "node:stream";
import type { DescFile, DescMessage, DescMethod, DescService } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
  type StreamRequest,
  type UnaryRequest,
} from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import {
  encodeGrpcStatusDetails,
  grpcStatusDetailsKey,
  type InternalErrorHandler,
  toWireError,
} from "./error-details.ts";
import { encodeFrame, encodeMessage } from "./frozen-message.ts";
import { GrpcCallContext } from "./grpc-call-context.ts";
import {
  type PushStreamImpl,
  type PushStreamObservation,
  type PushStreamObserver,
  pushStreamOf,
  type StreamSink,
} from "./push-stream.ts";
import { within } from "./within.ts";

/** One service and its implementation, as Connect's `router.service()` takes them. */
export interface ServiceRegistration<S extends DescService = DescService> {
  readonly desc: S;
  readonly impl: Partial<ServiceImpl<S>>;
}

/** Registrations with each impl checked against its own service. */
export type ServiceRegistrations<T extends readonly DescService[]> = {
  readonly [K in keyof T]: ServiceRegistration<T[K]>;
};

export interface ListenAddress {
  readonly host: string;
  /** The bound port: the one the OS chose when asked for port 0. */
  readonly port: number;
}

export interface GrpcServiceOptions {
  /** Connect interceptors, first = outermost, exactly as the HTTP listener runs them. */
  readonly interceptors?: readonly Interceptor[];
  /**
   * Lets server streams with a push form keep it under interceptors: it must do
   * for push streams what the interceptors do for streams (the telemetry one's span).
   */
  readonly pushStreamObserver?: PushStreamObserver;
  /** Gets the original error of every call that ends INTERNAL; the caller never sees it. */
  readonly onInternalError?: InternalErrorHandler;
  /** Aborting it aborts every call's signal and ends the call at once with the reason
   * (a ConnectError, e.g. UNAVAILABLE on shutdown), as Connect's option of that name. */
  readonly shutdownSignal?: AbortSignal;
}

/** A grpc-js service definition and its handlers, for `server.addService()`. */
export interface GrpcService {
  readonly definition: grpc.ServiceDefinition;
  readonly handlers: grpc.UntypedServiceImplementation;
}

/**
 * Adapts a Connect service implementation to grpc-js. Messages pass as raw
 * bytes so decoding happens here: a malformed request is INVALID_ARGUMENT (bad
 * input, as the design asks), not the INTERNAL that grpc-js answers, with the
 * parser's message, for a throwing deserializer.
 */
export function grpcServiceOf<S extends DescService>(
  desc: S,
  impl: Partial<ServiceImpl<S>>,
  opts: GrpcServiceOptions = {},
): GrpcService {
  const spec = createServiceImplSpec(desc, impl);
  const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of desc.methods) {
    const m = spec.methods[method.localName];
    if (m === undefined) continue;
    if (m.kind !== "unary" && m.kind !== "server_streaming") {
      throw new Error(
        `${desc.typeName}.${method.name}: ${m.kind} methods are not supported on the gRPC listener`,
      );
    }
    definition[method.name] = {
      path: `/${desc.typeName}/${method.name}`,
      requestStream: false,
      responseStream: m.kind === "server_streaming",
      requestSerialize: identity,
      requestDeserialize: m.kind === "server_streaming" ? ownCopy : identity,
      responseSerialize: identity,
      responseDeserialize: identity,
      originalName: method.localName,
    };
    // Interceptors see streams as async iterables: the push form only without
    // them, or with an observer that stands in for them.
    const push =
      m.kind === "server_streaming" &&
      ((opts.interceptors?.length ?? 0) === 0 || opts.pushStreamObserver !== undefined)
        ? pushStreamOf((impl as Record<string, unknown>)[method.localName])
        : undefined;
    handlers[method.name] =
      m.kind === "unary"
        ? (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
            serveUnary(m, call, cb, opts)
        : push !== undefined
          ? (call: grpc.ServerWritableStream<Buffer, Buffer>) =>
              servePushStream(m, push, call, opts)
          : (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
              void serveServerStream(m, call, opts);
            };
  }
  return { definition, handlers };
}

const identity = (b: Buffer) => b;
// grpc-js keeps a stream's request for the stream's whole life, and the bytes
// it hands over are a view of a 64 KiB read buffer: a copy of its own (not from
// Buffer's shared pool, which a kept slice would pin whole) lets that go.
const ownCopy = (b: Buffer) => {
  const copy = Buffer.allocUnsafeSlow(b.byteLength);
  b.copy(copy);
  return copy;
};

type AnyFn = Parameters<Interceptor>[0];
type UnarySpec = Extract<MethodImplSpec, { kind: "unary" }>;
type ServerStreamSpec = Extract<MethodImplSpec, { kind: "server_streaming" }>;

function serveUnary(
  spec: UnarySpec,
  call: grpc.ServerUnaryCall<Buffer, Buffer>,
  callback: grpc.sendUnaryData<Buffer>,
  opts: GrpcServiceOptions,
): void {
  const path = call.getPath();
  const ctx = new GrpcCallContext(call, spec.method, opts.shutdownSignal);
  let finished = false;
  const finish = (err: ConnectError | undefined, value?: Buffer) => {
    if (finished) return;
    finished = true;
    call.off("cancelled", onCancel);
    if (!call.cancelled) {
      const header = ctx.peekResponseHeader();
      if (header !== undefined) sendHeaders(call, header);
      const trailer = ctx.peekResponseTrailer();
      if (err === undefined) {
        callback(null, value, trailer !== undefined ? toMetadata(trailer) : undefined);
      } else callback(toServiceError(err, trailer));
    }
    // Completion aborts the signal too, as on Connect: work tied to it stops.
    ctx.abort();
  };
  const onCancel = () => {
    finished = true;
    ctx.abort(cancelledByClient());
  };
  call.on("cancelled", onCancel);
  // Deadline or shutdown: answer now; the handler learns it from its signal.
  ctx.onAbort = (reason) => {
    if (!finished) finish(asWireError(reason, path, opts));
  };

  if (opts.interceptors === undefined || opts.interceptors.length === 0) {
    // The hot path: no interceptor to build requests and responses for.
    (async () => {
      const out = await spec.impl(decode(spec.method.input, call.request), ctx);
      return encode(spec.method.output, create(spec.method.output, out));
    })().then(
      (bytes) => finish(undefined, bytes),
      (err: unknown) => finish(toWireError(err, path, ctx.signal, opts.onInternalError)),
    );
    return;
  }
  let inner: object | undefined;
  const next = chain(opts.interceptors, async (req) => {
    const u = req as UnaryRequest;
    const out = await spec.impl(u.message, mergeRequest(ctx, req));
    inner = responseOf(ctx, spec.method, {
      stream: false,
      message: create(spec.method.output, out),
    });
    return inner as Awaited<ReturnType<AnyFn>>;
  });
  (async () => {
    const message = decode(spec.method.input, call.request);
    const res = await next(requestOf(ctx, spec.method, { stream: false, message }) as UnaryRequest);
    // An interceptor that passed our response through left the headers where they are.
    if (res !== inner) {
      copyHeaders(res.header, ctx.responseHeader);
      copyHeaders(res.trailer, ctx.responseTrailer);
    }
    if (res.stream) throw new Error(`interceptor returned a stream for unary ${path}`);
    return encode(spec.method.output, res.message);
  })().then(
    (bytes) => finish(undefined, bytes),
    (err: unknown) => finish(toWireError(err, path, ctx.signal, opts.onInternalError)),
  );
}

async function serveServerStream(
  spec: ServerStreamSpec,
  call: grpc.ServerWritableStream<Buffer, Buffer>,
  opts: GrpcServiceOptions,
): Promise<void> {
  const path = call.getPath();
  const ctx = new GrpcCallContext(call, spec.method, opts.shutdownSignal);
  const stopped = Promise.withResolvers<undefined>();
  // Racing each wait against `stopped` with Promise.race would add a reaction
  // to it per message, kept until the call ends (a leak on long streams). One
  // reaction, and a slot the current wait fills, instead.
  let wakeOnStop: ((v: undefined) => void) | undefined;
  void stopped.promise.then(() => wakeOnStop?.(undefined));
  const untilStopped = <T>(p: Promise<T>): Promise<T | undefined> =>
    new Promise<T | undefined>((resolve, reject) => {
      wakeOnStop = resolve;
      p.then(resolve, reject);
    }).finally(() => {
      wakeOnStop = undefined;
    });
  let finished = false;
  let headersSent = false;
  const sendHeadersOnce = () => {
    if (headersSent) return;
    headersSent = true;
    const header = ctx.peekResponseHeader();
    if (header !== undefined) sendHeaders(call, header);
  };
  const finish = (err?: ConnectError) => {
    if (finished) return;
    finished = true;
    call.off("cancelled", onCancel);
    if (!call.cancelled) {
      sendHeadersOnce();
      endStream(call, ctx, err);
    }
    stopped.resolve(undefined);
    ctx.abort();
  };
  const onCancel = () => {
    finished = true;
    stopped.resolve(undefined);
    ctx.abort(cancelledByClient());
  };
  call.on("cancelled", onCancel);
  ctx.onAbort = (reason) => {
    if (!finished) finish(asWireError(reason, path, opts));
  };

  const next = chain(opts.interceptors, async (req) => {
    const s = req as StreamRequest;
    let input: DescMessageShape | undefined;
    for await (const m of s.message) {
      input = m;
      break;
    }
    if (input === undefined) throw new ConnectError("missing request message", Code.Unimplemented);
    inner = responseOf(ctx, spec.method, {
      stream: true,
      message: normalized(spec.method.output, spec.impl(input, mergeRequest(ctx, req))),
    });
    return inner as Awaited<ReturnType<AnyFn>>;
  });
  let inner: object | undefined;

  let it: AsyncIterator<DescMessageShape> | undefined;
  try {
    const message = decode(spec.method.input, call.request);
    const res = await next(
      requestOf(ctx, spec.method, { stream: true, message: single(message) }) as StreamRequest,
    );
    if (!res.stream) throw new Error(`interceptor returned a unary response for stream ${path}`);
    if (res !== inner) copyHeaders(res.header, ctx.responseHeader);
    it = res.message[Symbol.asyncIterator]();
    while (!finished) {
      // Race the handler against cancel/abort so a stuck handler cannot hold the call.
      const r = await untilStopped(it.next());
      if (r === undefined || finished) break;
      if (r.done === true) {
        if (res !== inner) copyHeaders(res.trailer, ctx.responseTrailer);
        finish();
        break;
      }
      sendHeadersOnce();
      if (!call.write(encode(spec.method.output, r.value))) await untilStopped(drained(call));
    }
  } catch (err) {
    finish(toWireError(err, path, ctx.signal, opts.onInternalError));
  } finally {
    // Stopped early (cancel, deadline, shutdown): close the handler's generator
    // so its finally blocks run; a no-op when it already ended.
    if (it?.return !== undefined) void it.return().catch(() => {});
  }
}

type DescMessageShape = UnaryRequest["message"];

/** Ends a server stream, after what was written: OK or `err`, with the handler's trailer. */
function endStream(
  call: grpc.ServerWritableStream<Buffer, Buffer>,
  ctx: GrpcCallContext,
  err: ConnectError | undefined,
): void {
  const trailer = ctx.peekResponseTrailer();
  if (err === undefined) call.end(trailer !== undefined ? toMetadata(trailer) : undefined);
  else call.emit("error", toServiceError(err, trailer));
}

function servePushStream(
  spec: ServerStreamSpec,
  push: PushStreamImpl<unknown, unknown>,
  call: grpc.ServerWritableStream<Buffer, Buffer>,
  opts: GrpcServiceOptions,
): void {
  const ctx = new GrpcCallContext(call, spec.method, opts.shutdownSignal);
  let request: unknown;
  try {
    request = decode(spec.method.input, call.request);
  } catch (err) {
    // Not observed: interceptors never see an undecodable request either.
    new GrpcSink(call, ctx, spec.method.output, opts, undefined).fail(err);
    return;
  }
  const observed = opts.pushStreamObserver?.(ctx);
  const sink = new GrpcSink(call, ctx, spec.method.output, opts, observed);
  try {
    if (observed === undefined) push(request, ctx, sink);
    else observed.run(() => push(request, ctx, sink));
  } catch (err) {
    sink.fail(err);
  }
}

/**
 * A push stream on a grpc-js call: one message in flight at a time and only
 * the newest one waiting behind it, so a subscriber that stopped reading holds
 * two messages, not every renewal since.
 */
class GrpcSink implements StreamSink<DescMessageShape> {
  readonly #call: grpc.ServerWritableStream<Buffer, Buffer>;
  readonly #ctx: GrpcCallContext;
  readonly #desc: DescMessage;
  readonly #opts: GrpcServiceOptions;
  readonly #observed: PushStreamObservation | undefined;
  #finished = false;
  #headersSent = false;
  #writing = false;
  #waiting: DescMessageShape | undefined;
  /** The call's HTTP/2 stream once its headers went out (see directStreamOf). */
  #direct: Writable | undefined;
  readonly #written = () => {
    this.#writing = false;
    const next = this.#waiting;
    if (next === undefined || this.#finished) return;
    this.#waiting = undefined;
    this.#write(next);
  };
  readonly #cancelled = () => {
    this.#finished = true;
    const reason = cancelledByClient();
    this.#ctx.abort(reason);
    this.#observed?.end(reason);
  };

  constructor(
    call: grpc.ServerWritableStream<Buffer, Buffer>,
    ctx: GrpcCallContext,
    desc: DescMessage,
    opts: GrpcServiceOptions,
    observed: PushStreamObservation | undefined,
  ) {
    this.#call = call;
    this.#ctx = ctx;
    this.#desc = desc;
    this.#opts = opts;
    this.#observed = observed;
    call.on("cancelled", this.#cancelled);
    // Deadline or shutdown: end now; the handler learns it from its signal.
    ctx.onAbort = (reason) => this.#finish(asWireError(reason, call.getPath(), opts));
  }

  send(message: DescMessageShape): void {
    if (this.#finished) return;
    if (this.#writing) this.#waiting = message;
    else this.#write(message);
  }

  end(error?: ConnectError): void {
    if (error === undefined) this.#finish(undefined);
    else this.fail(error);
  }

  /** Ends with `err` as the client sees it (anything but a ConnectError: INTERNAL). */
  fail(err: unknown): void {
    if (this.#finished) return;
    const path = this.#call.getPath();
    this.#finish(toWireError(err, path, this.#ctx.signal, this.#opts.onInternalError));
  }

  #write(message: DescMessageShape): void {
    this.#writing = true;
    this.#sendHeadersOnce();
    this.#direct ??= directStreamOf(this.#call);
    const direct = this.#direct;
    if (direct === undefined) this.#call.write(encode(this.#desc, message), this.#written);
    // A stream destroyed or ended under us is being cancelled: the cancel ends this sink.
    else if (!direct.destroyed && !direct.writableEnded) {
      direct.write(encodeFrame(this.#desc, message), this.#written);
    }
  }

  #sendHeadersOnce(): void {
    if (this.#headersSent) return;
    this.#headersSent = true;
    const header = this.#ctx.peekResponseHeader();
    if (header !== undefined) sendHeaders(this.#call, header);
  }

  #finish(err: ConnectError | undefined): void {
    if (this.#finished) return;
    this.#finished = true;
    const call = this.#call;
    call.off("cancelled", this.#cancelled);
    if (!call.cancelled) {
      this.#sendHeadersOnce();
      // The status goes after what is queued (grpc-js ends after pending writes).
      const last = this.#waiting;
      this.#waiting = undefined;
      if (last !== undefined) call.write(encode(this.#desc, last));
      endStream(call, this.#ctx, err);
    }
    this.#observed?.end(err);
    // Completion aborts the signal too, as on Connect: the handler lets go.
    this.#ctx.abort();
  }
}

/**
 * grpc-js copies every message it sends into a new length-prefixed frame: for
 * one renewal pushed to 10,000 streams, 21 MB of buffers (enough to set off a
 * full GC of every stream's state) and ~8 µs per stream. Once a call's headers
 * went out, its later messages can go straight to its HTTP/2 stream as one
 * frame built once and shared by all streams, in order with what grpc-js
 * writes (both land on the same stream, synchronously). This reads two
 * grpc-js internals, the call's `call.stream` and `call.metadataSent`; when
 * they are not there (another grpc-js version, a server interceptor wrapping
 * the call) the call is written the public way, and test/push-stream.test.ts
 * fails if the pinned grpc-js stops offering them.
 */
export function directStreamOf(
  call: grpc.ServerWritableStream<Buffer, Buffer>,
): Writable | undefined {
  const inner = (call as unknown as { call?: { metadataSent?: unknown; stream?: unknown } }).call;
  if (inner?.metadataSent !== true) return undefined;
  return inner.stream instanceof Duplex ? inner.stream : undefined;
}

/** Waits until the stream can take more; the listener goes when the call ends too. */
function drained(call: grpc.ServerWritableStream<Buffer, Buffer>): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("close", done);
      resolve();
    };
    call.once("drain", done);
    call.once("close", done);
  });
}

function chain(interceptors: readonly Interceptor[] | undefined, fn: AnyFn): AnyFn {
  // Same order as Connect: the first interceptor is the outermost.
  return (interceptors ?? []).reduceRight((next, i) => i(next), fn);
}

type AnyCall = grpc.ServerUnaryCall<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer>;

/**
 * The request an interceptor sees. Headers, URL and context values are getters:
 * metadata becomes Headers only if an interceptor reads them. (Never spread it.)
 */
function requestOf(
  ctx: GrpcCallContext,
  method: DescMethod,
  body: { stream: boolean; message: unknown },
) {
  return {
    ...body,
    method,
    service: ctx.service,
    requestMethod: ctx.requestMethod,
    get url() {
      return ctx.url;
    },
    signal: ctx.signal,
    get header() {
      return ctx.requestHeader;
    },
    get contextValues() {
      return ctx.values;
    },
  };
}

/** The handler's response, with headers and trailers created only when touched. */
function responseOf(
  ctx: GrpcCallContext,
  method: DescMethod,
  body: { stream: boolean; message: unknown },
) {
  return {
    ...body,
    method,
    service: method.parent,
    get header() {
      return ctx.responseHeader;
    },
    get trailer() {
      return ctx.responseTrailer;
    },
  };
}

/** The context the handler sees: interceptors may have replaced headers, signal or values. */
function mergeRequest(ctx: GrpcCallContext, req: UnaryRequest | StreamRequest): HandlerContext {
  return {
    method: ctx.method,
    service: req.service,
    requestMethod: ctx.requestMethod,
    protocolName: ctx.protocolName,
    url: ctx.url,
    timeoutMs: () => ctx.timeoutMs(),
    requestHeader: req.header,
    get responseHeader() {
      return ctx.responseHeader;
    },
    get responseTrailer() {
      return ctx.responseTrailer;
    },
    signal: req.signal,
    values: req.contextValues,
  };
}

function cancelledByClient(): ConnectError {
  return new ConnectError("the client cancelled the call", Code.Canceled);
}

function asWireError(reason: unknown, path: string, opts: GrpcServiceOptions): ConnectError {
  return toWireError(reason, path, undefined, opts.onInternalError);
}

function decode<D extends DescMessage>(desc: D, bytes: Buffer) {
  try {
    return fromBinary(desc, bytes);
  } catch (err) {
    throw new ConnectError(
      `cannot decode ${desc.typeName}`,
      Code.InvalidArgument,
      undefined,
      undefined,
      err,
    );
  }
}

function encode(desc: DescMessage, message: DescMessageShape): Buffer {
  const u8 = encodeMessage(desc, message);
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

async function* single<T>(message: T): AsyncGenerator<T> {
  yield message;
}

/** The handler's output as full messages (it may yield init shapes), keeping return(). */
function normalized(
  desc: DescMessage,
  source: AsyncIterable<Parameters<typeof create>[1]>,
): AsyncIterable<DescMessageShape> {
  return {
    [Symbol.asyncIterator]() {
      const it = source[Symbol.asyncIterator]();
      const map = (r: IteratorResult<Parameters<typeof create>[1]>) =>
        r.done === true ? r : { done: false as const, value: create(desc, r.value) };
      return {
        next: () => it.next().then(map),
        return: async (v?: unknown) =>
          it.return !== undefined ? map(await it.return(v)) : { done: true, value: v },
      };
    },
  };
}

function copyHeaders(from: Headers, to: Headers) {
  if (from === to) return;
  for (const k of [...to.keys()]) to.delete(k);
  from.forEach((v, k) => {
    to.append(k, v);
  });
}

// Protocol headers are grpc-js's to write; a handler or an error must not forge them.
const reservedHeader =
  /^(grpc-|:|content-type$|content-length$|te$|connection$|transfer-encoding$|trailer$|host$)/;

function toMetadata(headers: Headers, into = new grpc.Metadata()): grpc.Metadata {
  headers.forEach((value, key) => {
    if (reservedHeader.test(key)) return;
    try {
      if (key.endsWith("-bin")) {
        for (const v of value.split(",")) into.add(key, Buffer.from(v.trim(), "base64"));
      } else {
        into.add(key, value);
      }
    } catch {
      // grpc-js refuses keys or values that are not legal metadata: drop them.
    }
  });
  return into;
}

function sendHeaders(call: AnyCall, headers: Headers) {
  const md = toMetadata(headers);
  if (Object.keys(md.getMap()).length > 0) call.sendMetadata(md);
}

function toServiceError(err: ConnectError, trailer: Headers | undefined): grpc.ServerErrorResponse {
  const metadata = toMetadata(
    err.metadata,
    trailer !== undefined ? toMetadata(trailer) : undefined,
  );
  const details = encodeGrpcStatusDetails(err);
  if (details !== undefined) metadata.set(grpcStatusDetailsKey, Buffer.from(details));
  // Connect's Code numbers are gRPC's status codes.
  return Object.assign(new Error(err.rawMessage), {
    code: err.code as number as grpc.status,
    details: err.rawMessage,
    metadata,
  });
}

// ---------------------------------------------------------------------------
// The server: our services, health, reflection, bind, drain.

export interface GrpcServerOptions<T extends readonly DescService[]> {
  readonly services: ServiceRegistrations<T>;
  /**
   * A FileDescriptorSet (buf image) of the services, with source info, served
   * by reflection so `grpcurl describe` shows the proto comments. Without it
   * reflection serves the descriptors compiled into gen/ (no comments).
   */
  readonly reflectionDescriptorSet?: Uint8Array;
  /** Largest request message accepted; larger ones get RESOURCE_EXHAUSTED. Default 128 KiB. */
  readonly maxReceiveMessageBytes?: number;
  readonly interceptors?: readonly Interceptor[];
  /** See GrpcServiceOptions.pushStreamObserver. */
  readonly pushStreamObserver?: PushStreamObserver;
  readonly onInternalError?: InternalErrorHandler;
  /** Default insecure; TLS or mTLS with grpc.ServerCredentials.createSsl(). */
  readonly credentials?: grpc.ServerCredentials;
  /** Extra grpc-js server options (keepalive, ...); they win over ours. */
  readonly serverOptions?: grpc.ServerOptions;
}

export interface GrpcServer {
  /** Binds "host:port" ("[::1]:0" for IPv6); port 0 picks a free port. */
  listen(hostPort: string): Promise<ListenAddress>;
  /** Health of "" (the whole server) and of every registered service. Starts NOT_SERVING. */
  setServing(serving: boolean): void;
  /**
   * Stops accepting calls and lets in-flight ones finish for up to graceMs;
   * then ends the rest with UNAVAILABLE and closes every connection.
   */
  shutdown(graceMs: number): Promise<void>;
  /** The underlying grpc-js server, to add more services before listen(). */
  readonly server: grpc.Server;
}

/**
 * The largest valid request (StoreUpstreamTokens with three 16 KiB tokens and
 * a hundred scopes) is about 76 KB; anything much bigger is not a token request.
 */
export const defaultMaxReceiveMessageBytes = 128 * 1024;

// After the grace period, how long ended calls get to flush their status.
const flushMs = 250;

export function createGrpcServer<const T extends readonly DescService[]>(
  opts: GrpcServerOptions<T>,
): GrpcServer {
  const maxReceive = opts.maxReceiveMessageBytes ?? defaultMaxReceiveMessageBytes;
  if (!Number.isInteger(maxReceive) || maxReceive < 1) {
    throw new RangeError(`maxReceiveMessageBytes must be a positive integer; got ${maxReceive}`);
  }
  const server = new grpc.Server({
    "grpc.max_receive_message_length": maxReceive,
    ...opts.serverOptions,
  });
  const shutdownSignal = new AbortController();
  const services: readonly ServiceRegistration<T[number]>[] = opts.services;
  for (const s of services) {
    const { definition, handlers } = grpcServiceOf(s.desc, s.impl, {
      shutdownSignal: shutdownSignal.signal,
      ...(opts.interceptors !== undefined ? { interceptors: opts.interceptors } : {}),
      ...(opts.pushStreamObserver !== undefined
        ? { pushStreamObserver: opts.pushStreamObserver }
        : {}),
      ...(opts.onInternalError !== undefined ? { onInternalError: opts.onInternalError } : {}),
    });
    server.addService(definition, handlers);
  }

  const healthNames = ["", ...services.map((s) => s.desc.typeName)];
  const health = new HealthImplementation(
    Object.fromEntries(healthNames.map((n) => [n, "NOT_SERVING" as const])),
  );
  // Health Watch calls never end by themselves; they are tracked so a drain can
  // end them (UNAVAILABLE, after NOT_SERVING went out) instead of waiting out the grace.
  const healthWatches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  health.addToServer({
    addService(definition: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) {
      const watch = impl.watch as grpc.handleServerStreamingCall<unknown, unknown>;
      server.addService(definition, {
        ...impl,
        watch(call: grpc.ServerWritableStream<unknown, unknown>) {
          healthWatches.add(call);
          const forget = () => healthWatches.delete(call);
          call.on("cancelled", forget);
          call.on("finish", forget);
          watch(call);
        },
      });
    },
  } as grpc.Server);
  new ReflectionService(
    reflectionPackage(opts.reflectionDescriptorSet ?? descriptorSetOf(services)),
  ).addToServer(server);

  const setServing = (serving: boolean) => {
    for (const n of healthNames) health.setStatus(n, serving ? "SERVING" : "NOT_SERVING");
  };
  let stopped: Promise<void> | undefined;
  return {
    server,
    listen(hostPort) {
      return new Promise((resolve, reject) => {
        server.bindAsync(
          hostPort,
          opts.credentials ?? grpc.ServerCredentials.createInsecure(),
          (err, port) => (err ? reject(err) : resolve({ host: hostOf(hostPort), port })),
        );
      });
    },
    setServing,
    shutdown(graceMs) {
      stopped ??= (async () => {
        setServing(false);
        // Let NOT_SERVING reach the watchers, then end their calls.
        await new Promise((resolve) => setImmediate(resolve));
        for (const call of healthWatches) {
          call.emit("error", {
            code: grpc.status.UNAVAILABLE,
            details: "the server is shutting down",
          });
        }
        healthWatches.clear();
        const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
        if (await within(drained, graceMs)) return;
        shutdownSignal.abort(new ConnectError("the server is shutting down", Code.Unavailable));
        await within(drained, flushMs);
        server.forceShutdown();
      })();
      return stopped;
    },
  };
}

function hostOf(hostPort: string): string {
  const i = hostPort.lastIndexOf(":");
  return (i < 0 ? hostPort : hostPort.slice(0, i)).replace(/^\[|\]$/g, "");
}

/** The services' files and their imports, from the descriptors compiled into gen/. */
function descriptorSetOf(services: readonly ServiceRegistration[]): Uint8Array {
  const files = new Map<string, DescFile>();
  const add = (f: DescFile) => {
    if (files.has(f.proto.name)) return;
    files.set(f.proto.name, f);
    f.dependencies.forEach(add);
  };
  for (const s of services) add(s.desc.file);
  return toBinary(
    FileDescriptorSetSchema,
    create(FileDescriptorSetSchema, { file: [...files.values()].map((f) => f.proto) }),
  );
}

/**
 * A proto-loader package definition for @grpc/reflection, with grpc.health.v1
 * added so grpcurl can call the health service too. proto-loader re-encodes
 * files through protobufjs and drops their source info (the comments), so the
 * files it lists are swapped for the original bytes of the descriptor set.
 */
function reflectionPackage(descriptorSet: Uint8Array): protoLoader.PackageDefinition {
  const files = fromBinary(FileDescriptorSetSchema, descriptorSet).file;
  if (!files.some((f) => f.package === "grpc.health.v1")) files.push(healthFile());
  const originals = files.map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f)));
  const pkg = protoLoader.loadFileDescriptorSetFromBuffer(
    Buffer.from(
      toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: files })),
    ),
  );
  for (const [name, def] of Object.entries(pkg)) {
    // Message and enum entries list files; service entries do not.
    if ("fileDescriptorProtos" in def && Array.isArray(def.fileDescriptorProtos)) {
      pkg[name] = Object.assign({}, def, { fileDescriptorProtos: originals });
    }
  }
  return pkg;
}

/**
 * grpc/health/v1/health.proto, the part grpc-health-check serves (Check, Watch).
 * Written out because the descriptor protobufjs derives from that package's
 * .proto names its map entry wrongly, and Go clients such as grpcurl reject it.
 */
function healthFile(): FileDescriptorProto {
  const optional = FieldDescriptorProto_Label.OPTIONAL;
  const pkg = ".grpc.health.v1";
  return create(FileDescriptorProtoSchema, {
    name: "grpc/health/v1/health.proto",
    package: "grpc.health.v1",
    syntax: "proto3",
    messageType: [
      {
        name: "HealthCheckRequest",
        field: [
          {
            name: "service",
            jsonName: "service",
            number: 1,
            label: optional,
            type: FieldDescriptorProto_Type.STRING,
          },
        ],
      },
      {
        name: "HealthCheckResponse",
        field: [
          {
            name: "status",
            jsonName: "status",
            number: 1,
            label: optional,
            type: FieldDescriptorProto_Type.ENUM,
            typeName: `${pkg}.HealthCheckResponse.ServingStatus`,
          },
        ],
        enumType: [
          {
            name: "ServingStatus",
            value: ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"].map((name, number) => ({
              name,
              number,
            })),
          },
        ],
      },
    ],
    service: [
      {
        name: "Health",
        method: [
          {
            name: "Check",
            inputType: `${pkg}.HealthCheckRequest`,
            outputType: `${pkg}.HealthCheckResponse`,
          },
          {
            name: "Watch",
            inputType: `${pkg}.HealthCheckRequest`,
            outputType: `${pkg}.HealthCheckResponse`,
            serverStreaming: true,
          },
        ],
      },
    ],
    options: { goPackage: "google.golang.org/grpc/health/grpc_health_v1" },
  });
}
