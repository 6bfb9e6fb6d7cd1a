// A Prometheus scrape endpoint on a port of its own (`metrics.prometheusListen`
// or TOKENVEND_PROMETHEUS_LISTEN): GET /metrics serves tokenvend's metrics in
// the text exposition format. It has its own MeterProvider, so it works with or
// without the OTEL_* SDK.

import http from "node:http";
import type net from "node:net";
import type { MeterProvider as ApiMeterProvider } from "@opentelemetry/api";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import { MeterProvider } from "@opentelemetry/sdk-metrics";

export interface PrometheusEndpoint {
  readonly meterProvider: ApiMeterProvider;
  /** Binds "host:port"; port 0 picks a free port. */
  listen(hostPort: string): Promise<{ host: string; port: number }>;
  close(): Promise<void>;
}

export function createPrometheusEndpoint(serviceName = "tokenvend"): PrometheusEndpoint {
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const meterProvider = new MeterProvider({
    resource: defaultResource().merge(resourceFromAttributes({ "service.name": serviceName })),
    readers: [exporter],
  });
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/metrics") {
      exporter.getMetricsRequestHandler(req, res);
      return;
    }
    res.statusCode = 404;
    res.end("not found: scrape /metrics\n");
  });
  return {
    meterProvider,
    listen(hostPort) {
      const i = hostPort.lastIndexOf(":");
      const host = hostPort.slice(0, i).replace(/^\[|\]$/g, "");
      const port = Number(hostPort.slice(i + 1));
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host, port }, () => {
          server.off("error", reject);
          resolve({ host, port: (server.address() as net.AddressInfo).port });
        });
      });
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await meterProvider.shutdown();
    },
  };
}
