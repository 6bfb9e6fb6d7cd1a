// A Connect service implementation as a grpc-js service. Handlers are written
// once, as a Connect ServiceImpl; grpcServiceOf adapts each grpc-js call the way
// Connect's own gRPC handler would: a HandlerContext (headers from metadata,
// deadline, context values, a signal that aborts on cancel and on completion),
// the same interceptors, and the same error mapping, with details in
// grpc-status-details-bin. Unary and server-streaming methods only: the contract
// has no client or bidi streams, and an adapter refuses them loudly.

import type { DescService } from "@bufbuild/protobuf";
import { createServiceImplSpec, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { identity, ownCopy } from "./grpc-codec.ts";
import { serveServerStream } from "./grpc-iterable-stream.ts";
import { servePushStream } from "./grpc-push-stream.ts";
import { serveUnary } from "./grpc-unary.ts";
import { type PushStreamObserver, pushStreamOf } from "./push-stream.ts";
import type { WireErrors } from "./wire-errors.ts";

export interface GrpcServiceOptions {
  /** Connect interceptors, first = outermost, exactly as the HTTP listener runs them. */
  readonly interceptors?: readonly Interceptor[];
  /**
   * Lets server streams with a push form keep it under interceptors: it must do
   * for push streams what the interceptors do for streams (the telemetry one's span).
   */
  readonly pushStreamObserver?: PushStreamObserver;
  /** What errors become on the wire (createWireErrors), shared with the HTTP listener. */
  readonly errors: WireErrors;
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
  opts: GrpcServiceOptions,
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
