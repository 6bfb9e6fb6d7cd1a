// grpc.health.v1 alone on a plaintext port of its own, for Kubernetes' native
// gRPC probes, which cannot speak TLS: with TLS on the gRPC listener, the
// kubelet probes here. It serves nothing else (no tokens, no reflection) and
// reports what the gRPC listener reports.

import * as grpc from "@grpc/grpc-js";
import { type GrpcConnectionLimits, grpcLimitOptions } from "./connection-limits.ts";
import { createGrpcHealth } from "./grpc-health.ts";
import { parseHostPort } from "./host-port.ts";
import type { ListenAddress } from "./service-registration.ts";

export interface HealthListener {
  listen(hostPort: string): Promise<ListenAddress>;
  setServing(serving: boolean): void;
  /** NOT_SERVING reaches the watchers, then the listener closes. */
  close(): Promise<void>;
}

/**
 * Health of `names` ("" and each service the gRPC listener serves), under the
 * gRPC listener's connection limits and message size, and at most `maxWatches` Watch calls.
 */
export function createHealthListener(
  names: readonly string[],
  limits?: {
    readonly connections: GrpcConnectionLimits;
    readonly maxWatches: number;
    readonly maxReceiveMessageBytes: number;
  },
): HealthListener {
  const server = new grpc.Server(
    limits !== undefined
      ? {
          ...grpcLimitOptions(limits.connections),
          "grpc.max_receive_message_length": limits.maxReceiveMessageBytes,
        }
      : undefined,
  );
  const health = createGrpcHealth(server, names, limits?.maxWatches);
  return {
    listen: (hostPort) =>
      new Promise((resolve, reject) => {
        const { host } = parseHostPort(hostPort);
        server.bindAsync(hostPort, grpc.ServerCredentials.createInsecure(), (err, port) =>
          err ? reject(err) : resolve({ host, port }),
        );
      }),
    setServing: (serving) => health.setServing(serving),
    async close() {
      health.setServing(false);
      await health.endWatches();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}
