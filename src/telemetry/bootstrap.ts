// Whether this process is set up for OpenTelemetry, and the SDK that the
// preload (register.ts) started. Only the standard OTEL_* variables count: with
// none set nothing is started, nothing is exported, nothing is printed.

/** The SDK started by the preload; shut down last, so buffered spans are flushed. */
export interface TelemetrySdk {
  shutdown(): Promise<void>;
}

/** True when any OTEL_* variable is set (to something) and OTEL_SDK_DISABLED is not true. */
export function otelConfigured(env: Readonly<Record<string, string | undefined>>): boolean {
  if ((env.OTEL_SDK_DISABLED ?? "").trim().toLowerCase() === "true") return false;
  return Object.entries(env).some(([k, v]) => k.startsWith("OTEL_") && v !== undefined && v !== "");
}

// The preload and main.ts share one module instance (Node's loader caches
// modules by URL for the --import entry and the main entry alike), so this is
// how main learns whether the preload ran.
let preloaded: TelemetrySdk | undefined;

export function setPreloadedSdk(sdk: TelemetrySdk): void {
  preloaded = sdk;
}

/** The SDK the preload started, or undefined when it was not preloaded or not configured. */
export function preloadedSdk(): TelemetrySdk | undefined {
  return preloaded;
}
