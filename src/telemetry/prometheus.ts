// A Prometheus scrape endpoint (`metrics.prometheusListen` or
// TOKENVEND_PROMETHEUS_LISTEN): GET /metrics serves tokenvend's metrics in the
// text exposition format. It has its own MeterProvider, so it works with or
// without the OTEL_* SDK. The server assembly runs the handler on a listener
// of its own (transport/plain-http.ts).

import type { IncomingMessage, ServerResponse } from "node:http";
import type { MeterProvider as ApiMeterProvider } from "@opentelemetry/api";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import { MeterProvider } from "@opentelemetry/sdk-metrics";

export interface PrometheusEndpoint {
  readonly meterProvider: ApiMeterProvider;
  /** Answers GET /metrics; anything else is 404. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  shutdown(): Promise<void>;
}

export function createPrometheusEndpoint(serviceName = "tokenvend"): PrometheusEndpoint {
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const meterProvider = new MeterProvider({
    resource: defaultResource().merge(resourceFromAttributes({ "service.name": serviceName })),
    readers: [exporter],
  });
  return {
    meterProvider,
    handle(req, res) {
      const path = (req.url ?? "/").split("?")[0];
      if (req.method === "GET" && path === "/metrics") {
        exporter.getMetricsRequestHandler(req, res);
        return;
      }
      res.statusCode = 404;
      res.end("not found: scrape /metrics\n");
    },
    shutdown: () => meterProvider.shutdown(),
  };
}
