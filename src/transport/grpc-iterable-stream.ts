// A server stream on the gRPC listener served from the handler's async
// iterable, through the interceptors.

import { Code, ConnectError, type StreamRequest } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { GrpcCallContext } from "./grpc-call-context.ts";
import { type DescMessageShape, decode, encode } from "./grpc-codec.ts";
import {
  type AnyFn,
  chain,
  copyHeaders,
  mergeRequest,
  normalized,
  requestOf,
  responseOf,
  single,
} from "./grpc-interceptor-shapes.ts";
import { sendHeaders } from "./grpc-metadata.ts";
import { endStream, type ServerStreamSpec } from "./grpc-push-stream.ts";
import type { GrpcServiceOptions } from "./grpc-service.ts";

export async function serveServerStream(
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
    ctx.cancelled();
  };
  call.on("cancelled", onCancel);
  ctx.onAbort = (reason) => {
    if (!finished) finish(opts.errors(reason, ctx.signal, spec.method));
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
    finish(opts.errors(err, ctx.signal, spec.method));
  } finally {
    // Stopped early (cancel, deadline, shutdown): close the handler's generator
    // so its finally blocks run; a no-op when it already ended.
    if (it?.return !== undefined) void it.return().catch(() => {});
  }
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
