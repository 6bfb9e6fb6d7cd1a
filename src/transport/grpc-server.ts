// The gRPC listener: our services on a grpc-js server, with grpc.health.v1 and
// server reflection; binding and a bounded drain.

import type { DescService } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import type { Authenticate } from "./authentication.ts";
import { type GrpcConnectionLimits, grpcLimitOptions } from "./connection-limits.ts";
import { createListenerDrain } from "./drain.ts";
import { grpcAuthentication } from "./grpc-authentication.ts";
import { createGrpcHealth } from "./grpc-health.ts";
import { grpcServiceOf } from "./grpc-service.ts";
import { parseHostPort } from "./host-port.ts";
import type { PushStreamObserver } from "./push-stream.ts";
import { descriptorSetOf, reflectionPackage } from "./reflection.ts";
import type {
  ListenAddress,
  ServiceRegistration,
  ServiceRegistrations,
} from "./service-registration.ts";
import { createWireErrors, type WireErrors } from "./wire-errors.ts";

export interface GrpcServerOptions<T extends readonly DescService[]> {
  readonly services: ServiceRegistrations<T>;
  /**
   * A FileDescriptorSet (buf image) of the services, with source info, served
   * by reflection so `grpcurl describe` shows the proto comments. Without it
   * reflection serves the descriptors compiled into gen/ (no comments).
   */
  readonly reflectionDescriptorSet?: Uint8Array;
  /** Largest request message accepted; larger ones get RESOURCE_EXHAUSTED. */
  readonly maxReceiveMessageBytes: number;
  readonly interceptors?: readonly Interceptor[];
  /** See GrpcServiceOptions.pushStreamObserver. */
  readonly pushStreamObserver?: PushStreamObserver;
  /** What errors become on the wire: give both listeners the same. Default createWireErrors(). */
  readonly errors?: WireErrors;
  /** Default insecure; TLS or mTLS with grpc.ServerCredentials.createSsl() or TlsFiles. */
  readonly credentials?: grpc.ServerCredentials;
  /** Runs for every call but health's before its message is read (authentication.ts). */
  readonly authenticate?: Authenticate;
  /** Paths of services added outside `services` that need no authentication (a benchmark's echo). */
  readonly openPaths?: readonly string[];
  /** Streams, keepalive, idle and age, session memory per connection; grpc-js's defaults bound none. */
  readonly limits?: GrpcConnectionLimits;
  /** grpc.health.v1 Watch calls open at once; more are RESOURCE_EXHAUSTED. Default no cap. */
  readonly maxHealthWatches?: number;
  /** Extra grpc-js server options; they win over ours. */
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

export function createGrpcServer<const T extends readonly DescService[]>(
  opts: GrpcServerOptions<T>,
): GrpcServer {
  const maxReceive = opts.maxReceiveMessageBytes;
  if (!Number.isInteger(maxReceive) || maxReceive < 1) {
    throw new RangeError(`maxReceiveMessageBytes must be a positive integer; got ${maxReceive}`);
  }
  const server = new grpc.Server({
    "grpc.max_receive_message_length": maxReceive,
    ...(opts.limits !== undefined ? grpcLimitOptions(opts.limits) : {}),
    // No interceptor at all without authentication: grpc-js wraps every call in one.
    ...(opts.authenticate !== undefined
      ? { interceptors: [grpcAuthentication(opts.authenticate, new Set(opts.openPaths))] }
      : {}),
    ...opts.serverOptions,
  });
  const drain = createListenerDrain({
    async stopAccepting() {
      health.setServing(false);
      await health.endWatches();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
    forceClose: () => server.forceShutdown(),
  });
  const services: readonly ServiceRegistration<T[number]>[] = opts.services;
  const errors = opts.errors ?? createWireErrors();
  for (const s of services) {
    const { definition, handlers } = grpcServiceOf(s.desc, s.impl, {
      shutdownSignal: drain.shutdownSignal,
      authenticated: opts.authenticate !== undefined,
      ...(opts.interceptors !== undefined ? { interceptors: opts.interceptors } : {}),
      ...(opts.pushStreamObserver !== undefined
        ? { pushStreamObserver: opts.pushStreamObserver }
        : {}),
      errors,
    });
    server.addService(definition, handlers);
  }

  const health = createGrpcHealth(
    server,
    ["", ...services.map((s) => s.desc.typeName)],
    opts.maxHealthWatches,
  );
  new ReflectionService(
    reflectionPackage(opts.reflectionDescriptorSet ?? descriptorSetOf(services)),
  ).addToServer(server);

  const setServing = (serving: boolean) => health.setServing(serving);
  return {
    server,
    listen(hostPort) {
      return new Promise((resolve, reject) => {
        const { host } = parseHostPort(hostPort);
        server.bindAsync(
          hostPort,
          opts.credentials ?? grpc.ServerCredentials.createInsecure(),
          (err, port) => (err ? reject(err) : resolve({ host, port })),
        );
      });
    },
    setServing,
    shutdown: (graceMs) => drain.drain(graceMs),
  };
}
