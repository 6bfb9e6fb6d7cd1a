// OpenTelemetry held in memory for tests. The server under test runs in the
// test's process (startStack), so a tracer provider, async context, W3C
// propagation and the undici and MongoDB instrumentations registered here see
// everything it does. AVA runs each test file in a process of its own: this
// stays within the file that imports it. Import it first, before anything
// loads the MongoDB driver, so its instrumentation can patch the driver.

import { type Attributes, context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { MongoDBInstrumentation } from "@opentelemetry/instrumentation-mongodb";
import { UndiciInstrumentation } from "@opentelemetry/instrumentation-undici";
import {
  type DataPoint,
  type Histogram,
  MeterProvider,
  MetricReader,
  type ResourceMetrics,
} from "@opentelemetry/sdk-metrics";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";

export const spanExporter = new InMemorySpanExporter();
export const tracerProvider = new TracerProvider({
  spanProcessors: [new SimpleSpanProcessor({ exporter: spanExporter })],
});
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(new W3CTraceContextPropagator());
trace.setGlobalTracerProvider(tracerProvider);
registerInstrumentations({
  tracerProvider,
  instrumentations: [new UndiciInstrumentation(), new MongoDBInstrumentation()],
});

/** A metric reader collected on demand. */
class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

export interface TestMeter {
  readonly meterProvider: MeterProvider;
  /** The current (cumulative) values. */
  collect(): Promise<ResourceMetrics>;
}

/** A fresh meter provider: each test counts from zero. */
export function createTestMeter(): TestMeter {
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  return {
    meterProvider,
    async collect() {
      const { resourceMetrics, errors } = await reader.collect();
      if (errors.length > 0) throw errors[0];
      return resourceMetrics;
    },
  };
}

/** The data points of one metric whose attributes include `match`. */
export function points(
  rm: ResourceMetrics,
  name: string,
  match: Attributes = {},
): DataPoint<number | Histogram>[] {
  const out: DataPoint<number | Histogram>[] = [];
  for (const sm of rm.scopeMetrics) {
    for (const m of sm.metrics) {
      if (m.descriptor.name !== name) continue;
      for (const p of m.dataPoints as DataPoint<number | Histogram>[]) {
        if (Object.entries(match).every(([k, v]) => p.attributes[k] === v)) out.push(p);
      }
    }
  }
  return out;
}

/** Sum of a counter (or up-down counter) over the matching points. */
export function sumOf(rm: ResourceMetrics, name: string, match: Attributes = {}): number {
  return points(rm, name, match).reduce((n, p) => n + (p.value as number), 0);
}

/** Number of samples a histogram took over the matching points. */
export function countOf(rm: ResourceMetrics, name: string, match: Attributes = {}): number {
  return points(rm, name, match).reduce((n, p) => n + (p.value as Histogram).count, 0);
}

/** Finished spans, optionally only those of one trace. */
export function finishedSpans(traceId?: string): ReadableSpan[] {
  const all = spanExporter.getFinishedSpans();
  return traceId === undefined ? all : all.filter((s) => s.spanContext().traceId === traceId);
}

export type { ReadableSpan, ResourceMetrics };
