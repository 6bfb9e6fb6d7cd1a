// A Connect service implementation as a grpc-js service. Handlers are written
// once, as a Connect ServiceImpl; grpcServiceOf adapts each grpc-js call the way
// Connect's own gRPC handler would: a HandlerContext (headers from metadata,
// deadline, context values, a signal that aborts on cancel and on completion),
// the same interceptors, and the same error mapping, with details in
// grpc-status-details-bin. Unary methods and server streams in push form only
// (pushStream()): the contract has no client or bidi streams, and the adapter
// refuses what it cannot serve when the service is registered.

import type { DescService } from "@bufbuild/protobuf";
import { createServiceImplSpec, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { identity, ownCopy } from "./grpc-codec.ts";
import { type ServerStreamSpec, servePushStream } from "./grpc-push-stream.ts";
import { serveUnary } from "./grpc-unary.ts";
import { type PushStreamImpl, type PushStreamObserver, pushStreamOf } from "./push-stream.ts";
import type { WireErrors } from "./wire-errors.ts";

export interface GrpcServiceOptions {
  /**
   * Connect interceptors, first = outermost, as the HTTP listener runs them:
   * around unary calls; server streams, served in push form, get the observer.
   */
  readonly interceptors?: readonly Interceptor[];
  /**
   * Stands in for the interceptors on server streams, which are served in push
   * form (the telemetry one's span): required with interceptors and a stream.
   */
  readonly pushStreamObserver?: PushStreamObserver;
  /** What errors become on the wire (createWireErrors), shared with the HTTP listener. */
  readonly errors: WireErrors;
  /** The listener authenticates calls (grpc-authentication.ts): handlers find the caller. */
  readonly authenticated?: boolean;
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
    if (m.kind === "unary") {
      handlers[method.name] = (
        call: grpc.ServerUnaryCall<Buffer, Buffer>,
        cb: grpc.sendUnaryData<Buffer>,
      ) => serveUnary(m, call, cb, opts);
    } else {
      const name = `${desc.typeName}.${method.name}`;
      const push = pushFormOf(name, (impl as Record<string, unknown>)[method.localName], m, opts);
      handlers[method.name] = (call: grpc.ServerWritableStream<Buffer, Buffer>) =>
        servePushStream(m, push, call, opts);
    }
  }
  return { definition, handlers };
}

/**
 * The push form of a server stream, the only form the gRPC listener serves.
 * Refuses, when the service is registered, a stream written another way, and
 * interceptors without an observer to stand in for them on push streams.
 */
function pushFormOf(
  name: string,
  handler: unknown,
  spec: ServerStreamSpec,
  opts: GrpcServiceOptions,
): PushStreamImpl<unknown, unknown> {
  // Not implemented: Connect's stand-in throws UNIMPLEMENTED, which ends the stream.
  if (typeof handler !== "function") return (request, ctx) => void spec.impl(request as never, ctx);
  const push = pushStreamOf(handler);
  if (push === undefined) {
    throw new Error(
      `${name}: a server stream on the gRPC listener must be written with pushStream()`,
    );
  }
  if ((opts.interceptors?.length ?? 0) > 0 && opts.pushStreamObserver === undefined) {
    throw new Error(
      `${name}: interceptors do not see push streams; give a pushStreamObserver that does for them what the interceptors do`,
    );
  }
  return push;
}
