// Telemetry for the benchmarks' replica (BENCH_TELEMETRY=1): what the SDK sets
// up under OTEL_* (async context, W3C propagation, every span recorded and
// batched, metrics aggregated), with exporters that drop what they get, so
// the cost measured is the service's own instrumentation.

/** What the SDK sets up under OTEL_*, with an exporter that drops the spans. */
export async function benchTelemetry() {
  const { context, propagation, trace } = await import("@opentelemetry/api");
  const { AsyncLocalStorageContextManager } = await import("@opentelemetry/context-async-hooks");
  const { W3CTraceContextPropagator } = await import("@opentelemetry/core");
  const { BatchSpanProcessor, TracerProvider } = await import("@opentelemetry/sdk-trace");
  const {
    MeterProvider,
    PeriodicExportingMetricReader,
    InMemoryMetricExporter,
    AggregationTemporality,
  } = await import("@opentelemetry/sdk-metrics");
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const tracerProvider = new TracerProvider({
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: { export: (_spans, done) => done({ code: 0 }), shutdown: async () => {} },
      }),
    ],
  });
  trace.setGlobalTracerProvider(tracerProvider);
  const meterProvider = new MeterProvider({
    readers: [
      new PeriodicExportingMetricReader({
        exporter: new InMemoryMetricExporter(AggregationTemporality.DELTA),
        exportIntervalMillis: 10_000,
      }),
    ],
  });
  return { tracerProvider, meterProvider };
}
