// A caller's W3C baggage never reaches a provider: the server span continues
// the caller's trace (traceparent goes on to the token endpoint), but the
// baggage it sent is dropped, under the propagators the OTEL_* SDK installs
// (trace context and baggage).

import { randomBytes } from "node:crypto";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  CompositePropagator,
  W3CBaggagePropagator,
  W3CTraceContextPropagator,
} from "@opentelemetry/core";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { UndiciInstrumentation } from "@opentelemetry/instrumentation-undici";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import test from "ava";
import { getValid, startStack } from "./support/stack.ts";

const tracerProvider = new TracerProvider({
  spanProcessors: [new SimpleSpanProcessor({ exporter: new InMemorySpanExporter() })],
});
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(
  new CompositePropagator({
    propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
  }),
);
trace.setGlobalTracerProvider(tracerProvider);
registerInstrumentations({ tracerProvider, instrumentations: [new UndiciInstrumentation()] });

test("the caller's baggage is not forwarded to the provider; its trace is", async (t) => {
  const s = await startStack({ server: { telemetry: { tracerProvider } } });
  t.teardown(s.stop);
  await s.store("sess-baggage", await s.mint(), 2); // expired for callers: the read refreshes
  const traceId = randomBytes(16).toString("hex");
  await s.client.getValidTokens(getValid("sess-baggage"), {
    metadata: {
      traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`,
      baggage: "user.email=alice%40example.com",
    },
  });
  const headers = s.idp.counters.lastTokenRequestHeaders;
  t.regex(String(headers?.traceparent), new RegExp(`^00-${traceId}-`));
  t.is(headers?.baggage, undefined);
});
