// A replica's telemetry, from what startServer is given: spans from the given tracer provider,
// metrics to the given meter provider and/or the Prometheus endpoint (config.prometheusListen).
// Neither given: telemetry is off, no interceptor on either listener, no-op instruments.

import type { Meter, MeterProvider, TracerProvider } from "@opentelemetry/api";
import type { Config } from "./config.ts";
import { createRpcTelemetry, type RpcTelemetry } from "./rpc/rpc-interceptor.ts";
import {
  createRpcMetrics,
  instrumentationScope,
  noopMeter,
  teeMeter,
} from "./telemetry/metrics.ts";
import type { PrometheusEndpoint } from "./telemetry/prometheus.ts";

export interface ServerTelemetryOptions {
  readonly tracerProvider?: TracerProvider;
  readonly meterProvider?: MeterProvider;
}

export interface ServerTelemetry {
  readonly prometheus: PrometheusEndpoint | undefined;
  readonly tracer: ReturnType<TracerProvider["getTracer"]> | undefined;
  /** Undefined when no meter provider and no Prometheus endpoint: the core's no-op instruments. */
  readonly meter: Meter | undefined;
  readonly rpcTelemetry: RpcTelemetry | undefined;
}

export async function openServerTelemetry(
  config: Config,
  given: ServerTelemetryOptions | undefined,
): Promise<ServerTelemetry> {
  // Loaded only when configured: the metrics SDK costs ~16 MB resident.
  const prometheus =
    config.prometheusListen !== undefined
      ? (await import("./telemetry/prometheus.ts")).createPrometheusEndpoint()
      : undefined;
  const tracer = given?.tracerProvider?.getTracer(instrumentationScope);
  const meterProviders = [given?.meterProvider, prometheus?.meterProvider].filter(
    (p): p is MeterProvider => p !== undefined,
  );
  const meter =
    meterProviders.length > 0
      ? teeMeter(meterProviders.map((p) => p.getMeter(instrumentationScope)))
      : undefined;
  // Its push-stream observer keeps WatchToken on the gRPC listener's push path all the same.
  const rpcTelemetry =
    given !== undefined || prometheus !== undefined
      ? createRpcTelemetry({ tracer, metrics: createRpcMetrics(meter ?? noopMeter) })
      : undefined;
  return { prometheus, tracer, meter, rpcTelemetry };
}
