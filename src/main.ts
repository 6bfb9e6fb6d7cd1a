// Runs a replica: the only place that reads the environment, builds clients and
// wires everything. `tokenvend serve` and `tokenvend dev` (src/cli/) run it, and so
// does `node src/main.ts [--dev]`. Dev mode runs the embedded defaults: memory
// store, an in-process identity provider, a demo grant and a demo session,
// authentication off.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { metrics, trace } from "@opentelemetry/api";
import { type Config, ConfigError, loadConfig } from "./config.ts";
import type { TokenVendor } from "./core/token-vendor.ts";
import { createLogger, type RootLogger } from "./log.ts";
import { devConfigRefusal, devRefusal, startRefusal } from "./refusals.ts";
import { startServer } from "./server.ts";
import { SealingError } from "./store/sealing.ts";
import { otelConfigured, preloadedSdk } from "./telemetry/bootstrap.ts";
import { formatHostPort, parseHostPort } from "./transport/index.ts";

export interface RunServiceOptions {
  readonly dev: boolean;
  /** The environment (process.env, with the CLI's --config as TOKENVEND_CONFIG). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

/**
 * Starts a replica and installs the SIGTERM/SIGINT drain, which exits the process. Resolves once
 * it serves; rejects when it cannot start (startFailure says how to exit).
 */
export async function runService(opts: RunServiceOptions): Promise<void> {
  const { dev } = opts;
  let config: Config;
  let stopDev: (() => Promise<void>) | undefined;
  let devSession: ((vendor: TokenVendor) => Promise<void>) | undefined;
  const env = { ...opts.env };
  // The config file's digest goes to the audit stream: which config a replica ran with.
  const digest = createHash("sha256");
  const readFile = (p: string) => {
    const text = readFileSync(p, "utf8");
    if (p === env.TOKENVEND_CONFIG) digest.update(text);
    return text;
  };
  if (dev) {
    const refused = devRefusal(env);
    if (refused !== undefined) throw new ConfigError(refused);
  }

  if (dev && env.TOKENVEND_CONFIG === undefined) {
    // Loaded only in dev mode: oidc-provider is a devDependency.
    const { startDevIdentity } = await import("./dev/dev-mode.ts");
    const d = await startDevIdentity();
    stopDev = d.stop;
    env.TOKENVEND_DEV_CLIENT_SECRET = d.clientSecret;
    config = loadConfig({ env, readFile, fallback: d.config });
    devSession = (vendor) => d.storeDemoSession(config, vendor);
  } else {
    config = loadConfig({ env, readFile });
  }

  const refused = dev ? devConfigRefusal(config) : startRefusal(config);
  if (refused !== undefined) throw new ConfigError(refused);
  const log = createLogger(config.logLevel);
  if (dev) {
    log.warn(
      {},
      "DEVELOPMENT MODE: caller authentication is OFF and the identity provider is a local test one. Never expose this.",
    );
  }
  // The OTEL_* SDK, started by the --import preload (npm start and npm run dev use it).
  const sdk = preloadedSdk();
  if (sdk === undefined && otelConfigured(env)) {
    log.warn(
      {},
      "OTEL_* is set but the telemetry preload did not run: start with node --import ./src/telemetry/register.ts src/main.ts",
    );
  }
  let fatal: ((err: Error) => void) | undefined;
  const starting = startServer({
    config,
    logger: log,
    onFatal: (err) => fatal?.(err),
    configDigest: digest.digest("hex"),
    ...(sdk !== undefined
      ? {
          telemetry: {
            tracerProvider: trace.getTracerProvider(),
            meterProvider: metrics.getMeterProvider(),
          },
        }
      : {}),
  });
  const stop = async () => {
    // A start that failed is reported by runService's caller; there is nothing to drain.
    const running = await starting.catch(() => undefined);
    await running?.shutdown();
    await stopDev?.();
    // Last: flushes the spans and metrics of the drain itself.
    await sdk?.shutdown();
  };
  fatal = (err) => {
    process.stderr.write(`tokenvend: invalid configuration: ${err.message}\n`);
    void stop().finally(() => process.exit(2));
  };
  // Before anything says it serves: a SIGTERM sent as soon as it does must find the handler.
  installSignals(log, stop);
  const server = await starting;
  if (devSession !== undefined) {
    await devSession(server.vendor);
    printDevExamples(config, server.grpcPort, server.httpPort);
  }
}

function installSignals(log: RootLogger | undefined, stop: () => Promise<void>) {
  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log?.info({ signal }, "shutting down");
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log?.error({ err: err instanceof Error ? err.message : String(err) }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
}

function printDevExamples(config: Config, grpcPort: number, httpPort: number) {
  const g = formatHostPort({ host: parseHostPort(config.grpcListen).host, port: grpcPort });
  const h = `http://${formatHostPort({ host: parseHostPort(config.httpListen).host, port: httpPort })}`;
  const lines = [
    "",
    "tokenvend dev mode is ready. Try:",
    `  grpcurl -plaintext ${g} list`,
    `  grpcurl -plaintext ${g} describe tokenvend.v1.GetValidTokensRequest`,
    `  grpcurl -plaintext -d '{"grant":"demo"}' ${g} tokenvend.v1.TokenService/GetToken`,
    `  grpcurl -plaintext -d '{"session_id":"demo-session","provider":"local"}' ${g} tokenvend.v1.TokenService/GetValidTokens`,
    `  grpcurl -plaintext -d '{"grant":"demo"}' ${g} tokenvend.v1.TokenService/WatchToken`,
    `  curl -s -H 'content-type: application/json' -d '{"grant":"demo"}' ${h}/tokenvend.v1.TokenService/GetToken`,
    `  curl -s -H 'content-type: application/json' -d '{"sessionId":"demo-session","provider":"local"}' ${h}/tokenvend.v1.TokenService/GetValidTokens`,
    "",
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}

/** Whether an error is the configuration's fault (exit 2) rather than the world's (exit 1). */
export function isConfigurationError(err: unknown): err is Error {
  // A missing or malformed encryption key, or one other than the database recorded, is a
  // configuration error too.
  return (
    err instanceof ConfigError ||
    (err instanceof SealingError && (err.code === "INVALID_KEY" || err.code === "KEY_MISMATCH"))
  );
}

/** The message and exit code of a replica that could not start. */
export function startFailure(err: unknown): { message: string; exitCode: number } {
  if (isConfigurationError(err)) {
    return { message: `invalid configuration: ${err.message}`, exitCode: 2 };
  }
  return { message: `failed to start: ${withCause(err)}`, exitCode: 1 };
}

/** An error's message, and its cause's when that says more (a connection error, a missing file). */
export function withCause(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? err.cause.message : "";
  return cause !== "" && !err.message.includes(cause) ? `${err.message}: ${cause}` : err.message;
}

if (import.meta.main) {
  runService({ dev: process.argv.includes("--dev"), env: process.env }).catch((err: unknown) => {
    const { message, exitCode } = startFailure(err);
    process.stderr.write(`tokenvend: ${message}\n`);
    process.exit(exitCode);
  });
}
