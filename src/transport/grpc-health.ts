// grpc.health.v1 (Check and Watch) on the gRPC listener, through
// grpc-health-check, for "" (the whole server) and every service it serves.
// Health Watch calls never end by themselves; they are tracked so a drain can
// end them (UNAVAILABLE, after NOT_SERVING went out) instead of waiting out the
// grace, and counted so that a client cannot open them without bound.

import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { addHealthService } from "./library-internals.ts";

export interface GrpcHealth {
  /** Every name SERVING or NOT_SERVING. They start NOT_SERVING. */
  setServing(serving: boolean): void;
  /** Lets the last status reach the watchers, then ends their calls with UNAVAILABLE. */
  endWatches(): Promise<void>;
}

/**
 * Health of `names` on `server`. At most `maxWatches` Watch calls are open at
 * once (each holds a stream and a listener); more are RESOURCE_EXHAUSTED.
 */
export function createGrpcHealth(
  server: grpc.Server,
  names: readonly string[],
  maxWatches: number = Number.POSITIVE_INFINITY,
): GrpcHealth {
  const health = new HealthImplementation(
    Object.fromEntries(names.map((n) => [n, "NOT_SERVING" as const])),
  );
  const healthWatches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  addHealthService(health, server, (call) => {
    if (healthWatches.size >= maxWatches) {
      call.emit("error", {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `too many health watches on this listener (at most ${maxWatches})`,
      });
      return false;
    }
    healthWatches.add(call);
    const forget = () => healthWatches.delete(call);
    call.on("cancelled", forget);
    call.on("finish", forget);
    call.on("error", forget);
    return true;
  });
  return {
    setServing(serving) {
      for (const n of names) health.setStatus(n, serving ? "SERVING" : "NOT_SERVING");
    },
    async endWatches() {
      // Let NOT_SERVING reach the watchers, then end their calls.
      await new Promise((resolve) => setImmediate(resolve));
      for (const call of healthWatches) {
        call.emit("error", {
          code: grpc.status.UNAVAILABLE,
          details: "the server is shutting down",
        });
      }
      healthWatches.clear();
    },
  };
}
