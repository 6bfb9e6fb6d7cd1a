// The preload: `node --import ./src/telemetry/register.ts src/main.ts`. It runs
// before the application's modules load, so the instrumentations see the
// MongoDB driver and fetch from the start. With no OTEL_* variable set it loads
// nothing and does nothing.

import { otelConfigured, setPreloadedSdk } from "./bootstrap.ts";

if (otelConfigured(process.env)) {
  const { startSdk } = await import("./sdk.ts");
  setPreloadedSdk(startSdk());
}
