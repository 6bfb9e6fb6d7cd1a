// The request and response objects Connect interceptors see, built for a
// grpc-js call as Connect's own handlers build them, and the interceptor chain.

import type { DescMethod } from "@bufbuild/protobuf";
import type { HandlerContext, Interceptor, StreamRequest, UnaryRequest } from "@connectrpc/connect";
import type { GrpcCallContext } from "./grpc-call-context.ts";

export type AnyFn = Parameters<Interceptor>[0];

export function chain(interceptors: readonly Interceptor[] | undefined, fn: AnyFn): AnyFn {
  // Same order as Connect: the first interceptor is the outermost.
  return (interceptors ?? []).reduceRight((next, i) => i(next), fn);
}

/**
 * The request an interceptor sees. Headers, URL and context values are getters:
 * metadata becomes Headers only if an interceptor reads them. (Never spread it.)
 */
export function requestOf(
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
export function responseOf(
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
export function mergeRequest(
  ctx: GrpcCallContext,
  req: UnaryRequest | StreamRequest,
): HandlerContext {
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

export function copyHeaders(from: Headers, to: Headers) {
  if (from === to) return;
  for (const k of [...to.keys()]) to.delete(k);
  from.forEach((v, k) => {
    to.append(k, v);
  });
}
