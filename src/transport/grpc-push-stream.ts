// A server stream on the gRPC listener, served from the handler's push form:
// the handler calls send() per message on a GrpcSink, which keeps one message
// in flight and only the newest waiting, and once the call's headers went out
// writes each message as a frame shared by every stream (library-internals.ts).
// An observer (telemetry) stands in for the interceptors, which the push path
// does not run; the end status goes through the listener's WireErrors.

import type { Writable } from "node:stream";
import type { DescMessage } from "@bufbuild/protobuf";
import type { ConnectError, MethodImplSpec } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { encodeFrame } from "./frozen-message.ts";
import { GrpcCallContext } from "./grpc-call-context.ts";
import { type DescMessageShape, decode, encode } from "./grpc-codec.ts";
import { sendHeaders, toMetadata, toServiceError } from "./grpc-metadata.ts";
import type { GrpcServiceOptions } from "./grpc-service.ts";
import { directStreamOf } from "./library-internals.ts";
import type { PushStreamImpl, PushStreamObservation, StreamSink } from "./push-stream.ts";

export type ServerStreamSpec = Extract<MethodImplSpec, { kind: "server_streaming" }>;

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

export function servePushStream(
  spec: ServerStreamSpec,
  push: PushStreamImpl<unknown, unknown>,
  call: grpc.ServerWritableStream<Buffer, Buffer>,
  opts: GrpcServiceOptions,
): void {
  const ctx = new GrpcCallContext(call, spec.method, opts.shutdownSignal, opts.authenticated);
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
  /** The call's HTTP/2 stream once its headers went out (see directStreamOf in library-internals.ts). */
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
    this.#ctx.cancelled();
    this.#observed?.end(this.#ctx.signal.reason as ConnectError);
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
    ctx.onAbort = (reason) => this.#finish(opts.errors(reason, ctx.signal, ctx.method));
  }

  send(message: DescMessageShape): void {
    if (this.#finished) return;
    if (this.#writing) this.#waiting = message;
    else this.#write(message);
  }

  end(error?: unknown): void {
    if (error === undefined) this.#finish(undefined);
    else this.fail(error);
  }

  /** Ends with `err` as the client sees it (through the listener's WireErrors). */
  fail(err: unknown): void {
    if (this.#finished) return;
    this.#finish(this.#opts.errors(err, this.#ctx.signal, this.#ctx.method));
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
