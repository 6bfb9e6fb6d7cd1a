// Assembles one replica: the vendor over a store and the upstream client, the
// service mounted on the gRPC and the HTTP listeners, and a bounded drain.
// With authentication on, both listeners authenticate every call but health's
// before its body is read, and the TokenService guard (rpc/access-control.ts)
// applies the policy and writes the audit stream (security.ts builds them).

import { readFileSync } from "node:fs";
import type { MeterProvider, TracerProvider } from "@opentelemetry/api";
import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import type { Config } from "./config.ts";
import { type Clock, systemClock } from "./core/clock.ts";
import { shuttingDownError } from "./core/errors.ts";
import type { Logger } from "./core/logger.ts";
import { noopLogger } from "./core/logger.ts";
import { startStoreSweeper } from "./core/store-sweeper.ts";
import type { TokenStore } from "./core/token-store.ts";
import { createTokenVendor, type TokenVendor } from "./core/token-vendor.ts";
import type { UpstreamClient } from "./core/upstream.ts";
import { createUpstreamClient } from "./idp/upstream-client.ts";
import { guardTokenService } from "./rpc/access-control.ts";
import { toConnectError } from "./rpc/error-mapping.ts";
import { createRpcTelemetry } from "./rpc/rpc-interceptor.ts";
import { createTokenService } from "./rpc/token-service.ts";
import { createSecurity } from "./security.ts";
import { openStore } from "./store/open-store.ts";
import {
  createRpcMetrics,
  instrumentationScope,
  noopMeter,
  teeMeter,
} from "./telemetry/metrics.ts";
import {
  createGrpcServer,
  createHealthListener,
  createHttpServer,
  createPlainHttpListener,
  createWireErrors,
  formatHostPort,
  type GrpcServer,
} from "./transport/index.ts";

export interface StartServerOptions {
  readonly config: Config;
  readonly logger?: Logger;
  readonly store?: TokenStore;
  /** Defaults to the oauth4webapi client built from config.providers (src/idp). */
  readonly upstream?: UpstreamClient;
  readonly clock?: Clock;
  /** The config file's SHA-256, for the audit stream's config record. */
  readonly configDigest?: string;
  /** For JWKS and discovery requests (tests); default the global fetch. */
  readonly fetch?: typeof fetch;
  /** Adds services to the grpc-js server before it listens (the benchmark's echo). */
  readonly configureGrpc?: (server: GrpcServer["server"]) => void;
  /** Paths configureGrpc adds that are served without authentication. */
  readonly openGrpcPaths?: readonly string[];
  /**
   * Where spans and metrics go (main passes the OTEL_* SDK's). Without it and
   * without config.prometheusListen, telemetry is off: no interceptor on either
   * listener, no-op instruments in the core.
   */
  readonly telemetry?: {
    readonly tracerProvider?: TracerProvider;
    readonly meterProvider?: MeterProvider;
  };
}

export interface RunningServer {
  readonly grpcPort: number;
  readonly httpPort: number;
  /** The plaintext health listener's port, when config.healthListen is set. */
  readonly healthPort: number | undefined;
  /** The Prometheus scrape endpoint's port, when config.prometheusListen is set. */
  readonly prometheusPort: number | undefined;
  readonly vendor: TokenVendor;
  readonly store: TokenStore;
  /** Drains: NOT_SERVING, streams end UNAVAILABLE, in-flight calls finish within the grace. */
  shutdown(): Promise<void>;
}

const descriptorSetPath = new URL("../gen/tokenvend.binpb", import.meta.url);

export async function startServer(opts: StartServerOptions): Promise<RunningServer> {
  const { config } = opts;
  const log = opts.logger ?? noopLogger;
  const lifecycle = new AbortController();
  const store =
    opts.store ??
    (await openStore({
      store: config.store,
      keys: { keyText: config.encryptionKeys, keyFiles: config.encryptionKeyFiles },
      logger: log,
    }));
  const clock = opts.clock ?? systemClock;
  const security = createSecurity({
    config,
    logger: log,
    now: () => clock.now(),
    ...(opts.fetch !== undefined ? { fetch: opts.fetch } : {}),
  });
  const upstream = security.audited(
    opts.upstream ??
      createUpstreamClient({
        // A ProviderConfig is an UpstreamProviderConfig plus the lifecycle policy.
        providers: config.providers,
        signal: lifecycle.signal,
      }),
  );
  // --- telemetry: spans from the given tracer provider; metrics to the given
  // meter provider and/or the Prometheus endpoint ---
  // Loaded only when configured: the metrics SDK costs ~16 MB resident.
  const prometheus =
    config.prometheusListen !== undefined
      ? (await import("./telemetry/prometheus.ts")).createPrometheusEndpoint()
      : undefined;
  const tracer = opts.telemetry?.tracerProvider?.getTracer(instrumentationScope);
  const meterProviders = [opts.telemetry?.meterProvider, prometheus?.meterProvider].filter(
    (p): p is MeterProvider => p !== undefined,
  );
  const meter =
    meterProviders.length > 0
      ? teeMeter(meterProviders.map((p) => p.getMeter(instrumentationScope)))
      : undefined;
  // Telemetry off: no interceptor at all. On: its push-stream observer keeps
  // WatchToken on the gRPC listener's push path all the same.
  const rpcTelemetry =
    opts.telemetry !== undefined || prometheus !== undefined
      ? createRpcTelemetry({ tracer, metrics: createRpcMetrics(meter ?? noopMeter) })
      : undefined;
  const interceptors = rpcTelemetry !== undefined ? [rpcTelemetry.interceptor] : [];
  const vendor = createTokenVendor({
    store,
    upstream,
    providers: config.providers,
    grants: config.grants,
    logger: log,
    signal: lifecycle.signal,
    refreshTimeoutMs: config.refreshTimeoutMs,
    maxStreams: config.maxStreams,
    claimLeaseMs: config.claimLeaseMs,
    claimPollMs: config.claimPollMs,
    syncIntervalMs: store.shared ? config.syncIntervalMs : 0,
    idleEvictMs: config.idleEvictMs,
    minRefreshIntervalMs: config.minRefreshIntervalMs,
    grantKeepFreshMs: config.grantKeepFreshMs,
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
    ...(tracer !== undefined ? { tracer } : {}),
    ...(meter !== undefined ? { meter } : {}),
  });
  // Authentication off and no audit: the handlers as they are, nothing on the hot path.
  const guarded = security.policy !== undefined || security.audit !== undefined;
  const service = createTokenService({
    vendor,
    guarded,
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
  });
  const impl = guarded
    ? guardTokenService(service, {
        policy: security.policy,
        sessionJwts: security.sessionJwts,
        audit: security.audit,
        now: () => clock.now(),
      })
    : service;
  // The one mapping of errors to the wire, for both listeners.
  const errors = createWireErrors({
    toConnectError,
    onInternalError: (err, method) =>
      log.error(
        { method, err: err instanceof Error ? err.message : String(err) },
        "internal error",
      ),
  });
  const services = [{ desc: TokenService, impl }];

  const grpc = createGrpcServer({
    services,
    reflectionDescriptorSet: readFileSync(descriptorSetPath),
    maxReceiveMessageBytes: config.maxMessageBytes,
    errors,
    ...(security.authenticate !== undefined ? { authenticate: security.authenticate } : {}),
    ...(opts.openGrpcPaths !== undefined ? { openPaths: opts.openGrpcPaths } : {}),
    ...(security.tls !== undefined ? { credentials: security.tls.grpcCredentials() } : {}),
    ...(rpcTelemetry !== undefined
      ? { interceptors, pushStreamObserver: rpcTelemetry.pushStreamObserver }
      : {}),
  });
  opts.configureGrpc?.(grpc.server);
  const http = createHttpServer({
    services,
    readMaxBytes: config.maxMessageBytes,
    errors,
    guard: { allowedHosts: config.allowedHosts, corsOrigins: config.corsOrigins },
    ...(security.authenticate !== undefined ? { authenticate: security.authenticate } : {}),
    ...(security.tls !== undefined ? { tls: security.tls } : {}),
    ...(interceptors.length > 0 ? { interceptors } : {}),
  });
  const grpcAddr = await grpc.listen(config.grpcListen);
  const httpAddr = await http.listen(config.httpListen);
  const metricsListener =
    prometheus !== undefined ? createPlainHttpListener(prometheus.handle) : undefined;
  const promAddr =
    metricsListener !== undefined && config.prometheusListen !== undefined
      ? await metricsListener.listen(config.prometheusListen)
      : undefined;
  const healthListener =
    config.healthListen !== undefined
      ? createHealthListener(["", ...services.map((s) => s.desc.typeName)])
      : undefined;
  const healthAddr =
    healthListener !== undefined && config.healthListen !== undefined
      ? await healthListener.listen(config.healthListen)
      : undefined;
  grpc.setServing(true);
  healthListener?.setServing(true);
  security.recordStart(opts.configDigest);
  const sweeper = startStoreSweeper({
    store,
    clock,
    intervalMs: config.sweepIntervalMs,
    logger: log,
    meter: meter ?? noopMeter,
    signal: lifecycle.signal,
  });
  log.info(
    {
      grpc: formatHostPort(grpcAddr),
      http: formatHostPort(httpAddr),
      ...(promAddr !== undefined ? { prometheus: formatHostPort(promAddr) } : {}),
      ...(healthAddr !== undefined ? { health: formatHostPort(healthAddr) } : {}),
      store: store.kind,
      auth: config.auth.enabled ? "on" : "off",
      tls: config.tls === undefined ? "off" : config.tls.requireClientCert ? "mtls" : "on",
      audit: config.audit === undefined ? "off" : config.audit.target.kind,
    },
    "tokenvend serving",
  );

  let drained: Promise<void> | undefined;
  return {
    grpcPort: grpcAddr.port,
    httpPort: httpAddr.port,
    prometheusPort: promAddr?.port,
    healthPort: healthAddr?.port,
    vendor,
    store,
    shutdown() {
      drained ??= (async () => {
        log.info({ graceMs: config.shutdownGraceMs }, "draining");
        sweeper.stop();
        grpc.setServing(false);
        healthListener?.setServing(false);
        await vendor.close();
        await Promise.all([
          grpc.shutdown(config.shutdownGraceMs),
          http.close(config.shutdownGraceMs),
        ]);
        lifecycle.abort(shuttingDownError());
        await healthListener?.close();
        await store.close();
        await security.close();
        // Last: a scrape during the drain still sees the drain's metrics.
        await metricsListener?.close(config.shutdownGraceMs);
        await prometheus?.shutdown();
        log.info({}, "stopped");
      })();
      return drained;
    },
  };
}
