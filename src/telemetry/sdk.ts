// The OpenTelemetry Node SDK as tokenvend runs it: exporters, sampler,
// propagators and resource all from the standard OTEL_* variables (see
// docs/OPERATIONS.md), plus the two instrumentations the service needs: undici
// (Node's fetch: the token-endpoint calls, with `traceparent` sent to the
// provider) and the MongoDB driver. Loaded only when OTEL_* is set.

import { MongoDBInstrumentation } from "@opentelemetry/instrumentation-mongodb";
import { UndiciInstrumentation } from "@opentelemetry/instrumentation-undici";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import { startNodeSdk } from "@opentelemetry/sdk-node";
import type { TelemetrySdk } from "./bootstrap.ts";

export const serviceName = "tokenvend";

export function startSdk(): TelemetrySdk {
  return startNodeSdk({
    // The lowest priority: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
    baseResource: defaultResource().merge(resourceFromAttributes({ "service.name": serviceName })),
    instrumentations: [
      new UndiciInstrumentation(),
      // Statements carry no values (no token material, which is sealed anyway).
      new MongoDBInstrumentation({ enhancedDatabaseReporting: false }),
    ],
  });
}
