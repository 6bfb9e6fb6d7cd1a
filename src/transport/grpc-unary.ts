// A unary call on the gRPC listener: the handler run with a GrpcCallContext,
// through the interceptors when there are any, and the answer with its
// headers and trailers; cancel, deadline and shutdown answer at once.

import { create } from "@bufbuild/protobuf";
import type { ConnectError, MethodImplSpec, UnaryRequest } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { GrpcCallContext } from "./grpc-call-context.ts";
import { decode, encode } from "./grpc-codec.ts";
import {
  type AnyFn,
  chain,
  copyHeaders,
  mergeRequest,
  requestOf,
  responseOf,
} from "./grpc-interceptor-shapes.ts";
import { sendHeaders, toMetadata, toServiceError } from "./grpc-metadata.ts";
import type { GrpcServiceOptions } from "./grpc-service.ts";

export type UnarySpec = Extract<MethodImplSpec, { kind: "unary" }>;

export function serveUnary(
  spec: UnarySpec,
  call: grpc.ServerUnaryCall<Buffer, Buffer>,
  callback: grpc.sendUnaryData<Buffer>,
  opts: GrpcServiceOptions,
): void {
  const ctx = new GrpcCallContext(call, spec.method, opts.shutdownSignal, opts.authenticated);
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
    ctx.cancelled();
  };
  call.on("cancelled", onCancel);
  // Deadline or shutdown: answer now; the handler learns it from its signal.
  ctx.onAbort = (reason) => {
    if (!finished) finish(opts.errors(reason, ctx.signal, spec.method));
  };

  if (opts.interceptors === undefined || opts.interceptors.length === 0) {
    // The hot path: no interceptor to build requests and responses for.
    (async () => {
      const out = await spec.impl(decode(spec.method.input, call.request), ctx);
      return encode(spec.method.output, create(spec.method.output, out));
    })().then(
      (bytes) => finish(undefined, bytes),
      (err: unknown) => finish(opts.errors(err, ctx.signal, spec.method)),
    );
    return;
  }
  let inner: object | undefined;
  const next = chain(opts.interceptors, async (req) => {
    const u = req as UnaryRequest;
    let out: Awaited<ReturnType<UnarySpec["impl"]>>;
    try {
      out = await spec.impl(u.message, mergeRequest(ctx, req));
    } catch (err) {
      // Interceptors see the error as the caller will.
      throw opts.errors(err, ctx.signal, spec.method);
    }
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
    if (res.stream) throw new Error(`interceptor returned a stream for unary ${call.getPath()}`);
    return encode(spec.method.output, res.message);
  })().then(
    (bytes) => finish(undefined, bytes),
    (err: unknown) => finish(opts.errors(err, ctx.signal, spec.method)),
  );
}
