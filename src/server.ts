// Assembles one replica: the vendor over a store and the upstream client, the
// service mounted on the gRPC and the HTTP listeners, and a bounded drain.
// With authentication on, both listeners authenticate every call but health's
// before its body is read, and the TokenService guard (rpc/access-control.ts)
// applies the policy and writes the audit stream (security.ts builds them).

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import type { MeterProvider, TracerProvider } from "@opentelemetry/api";
import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import { type Config, configDefaults } from "./config.ts";
import { type Clock, systemClock } from "./core/clock.ts";
import { shuttingDownError } from "./core/errors.ts";
import type { FlowStateStore } from "./core/flow-state-store.ts";
import { createFlows, type Flows } from "./core/flows.ts";
import type { Logger } from "./core/logger.ts";
import { noopLogger } from "./core/logger.ts";
import { createRenewalFailures } from "./core/renewal-failures.ts";
import { startStoreSweeper } from "./core/store-sweeper.ts";
import type { TokenStore } from "./core/token-store.ts";
import { createTokenVendor, type TokenVendor } from "./core/token-vendor.ts";
import type { UpstreamClient } from "./core/upstream.ts";
import { createFlowClient } from "./idp/flow-client.ts";
import { createProviderStates, createUpstreamClient } from "./idp/upstream-client.ts";
import { createWebhookSender } from "./idp/webhook-sender.ts";
import { startReplicaHeartbeat } from "./ops/replica-heartbeat.ts";
import { seedStore } from "./ops/seed.ts";
import { guardTokenService } from "./rpc/access-control.ts";
import { toConnectError } from "./rpc/error-mapping.ts";
import { createFlowService } from "./rpc/flow-service.ts";
import { createRpcTelemetry } from "./rpc/rpc-interceptor.ts";
import { createTokenService } from "./rpc/token-service.ts";
import { createSecurity } from "./security.ts";
import { replicaRegistryOf } from "./store/mongo-replicas.ts";
import { openFlowStates } from "./store/open-flow-states.ts";
import { openStore } from "./store/open-store.ts";
import {
  attr,
  createFlowMetrics,
  createRpcMetrics,
  createServiceLimitMetrics,
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
  /** The flows' state; by default opened beside the token store from config.store. */
  readonly flowStates?: FlowStateStore;
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
  readonly flows: Flows;
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
  if (config.bootstrap.length > 0) {
    const seeded = await seedStore(store, config.bootstrap, {
      nowMs: (opts.clock ?? systemClock).now(),
    }).catch(async (err: unknown) => {
      if (opts.store === undefined) await store.close();
      throw new Error("could not store the bootstrap tokens", { cause: err });
    });
    log.info(seeded, "bootstrap tokens: stored where their key had none");
  }
  const keys = { keyText: config.encryptionKeys, keyFiles: config.encryptionKeyFiles };
  const flowStates = opts.flowStates ?? (await openFlowStates(config.store, keys));
  const clock = opts.clock ?? systemClock;
  // One state per provider (metadata, client authentication), shared by both clients.
  const providerStates = createProviderStates({
    // A ProviderConfig is an UpstreamProviderConfig plus the lifecycle policy.
    providers: config.providers,
    signal: lifecycle.signal,
    maxResponseBytes: config.transportLimits.maxProviderResponseBytes,
    onClientSecretSwitch: (provider, index) => {
      flowMetrics.clientSecretSwitches.add(1, { [attr.provider]: provider });
      log.warn(
        { provider, secretIndex: index },
        "client secret rejected (invalid_client): switched to the next one",
      );
    },
  });
  const security = createSecurity({
    config,
    logger: log,
    now: () => clock.now(),
    ...(opts.fetch !== undefined ? { fetch: opts.fetch } : {}),
  });
  // Names this replica in refresh claims and in the shared store's replica records.
  const replicaId = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const upstream = security.audited(
    opts.upstream ?? createUpstreamClient({ states: providerStates }),
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
  const flowMetrics = createFlowMetrics(meter ?? noopMeter);
  const renewalFailures = createRenewalFailures({
    providers: config.providers,
    deliver: createWebhookSender(),
    clock,
    random: Math.random,
    logger: log,
    signal: lifecycle.signal,
    backoff: configDefaults.webhookBackoff,
    maxAttempts: config.flows.webhookMaxAttempts,
    timeoutMs: config.flows.webhookTimeoutMs,
    failures: flowMetrics.renewalFailures,
    deliveries: flowMetrics.webhookDeliveries,
  });
  let flows: Flows | undefined;
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
    replicaId,
    onRenewalFailure: renewalFailures.report,
    awaitLogin: (sessionId, provider, signal) =>
      flows?.device.awaitLogin(sessionId, provider, signal) ?? Promise.resolve(),
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
    ...(tracer !== undefined ? { tracer } : {}),
    ...(meter !== undefined ? { meter } : {}),
  });
  flows = createFlows({
    vendor,
    store,
    states: flowStates,
    upstream: createFlowClient(providerStates),
    providers: config.providers,
    grants: config.grants,
    clock,
    random: Math.random,
    logger: log,
    signal: lifecycle.signal,
    replicaId,
    tracer,
    meter,
    authorizationStateTtlMs: config.flows.authorizationStateTtlMs,
    upstreamTimeoutMs: config.refreshTimeoutMs,
    unusedRefreshScanIntervalMs: config.flows.unusedRefreshScanIntervalMs,
    unusedRefreshRatePerSecond: config.flows.unusedRefreshRatePerSecond,
    sweepIntervalMs: config.sweepIntervalMs,
    idleEvictMs: config.idleEvictMs,
    minRefreshIntervalMs: config.minRefreshIntervalMs,
    maxStreams: config.maxStreams,
  });
  // Authentication off and no audit: the handlers as they are, nothing on the hot path.
  const guarded = security.policy !== undefined || security.audit !== undefined;
  // One implementation of TokenService, the flows' methods included, for both listeners.
  const service = {
    ...createTokenService({
      vendor,
      exchanges: flows.exchanges,
      guarded,
      ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
    }),
    ...createFlowService(flows, { guarded }),
  };
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
    limits: config.transportLimits.grpc,
    maxHealthWatches: config.transportLimits.maxHealthWatches,
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
    limits: config.transportLimits.http,
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
      ? createHealthListener(["", ...services.map((s) => s.desc.typeName)], {
          connections: config.transportLimits.grpc,
          maxWatches: config.transportLimits.maxHealthWatches,
          maxReceiveMessageBytes: config.maxMessageBytes,
        })
      : undefined;
  const healthAddr =
    healthListener !== undefined && config.healthListen !== undefined
      ? await healthListener.listen(config.healthListen)
      : undefined;
  grpc.setServing(true);
  if (meter !== undefined) createServiceLimitMetrics(meter, { maxStreams: config.maxStreams });
  const registry = replicaRegistryOf(store);
  const heartbeat =
    registry !== undefined
      ? startReplicaHeartbeat({
          registry,
          replicaId,
          clock,
          intervalMs: config.replicaHeartbeatMs,
          logger: log,
          signal: lifecycle.signal,
        })
      : undefined;
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
    flows,
    shutdown() {
      drained ??= (async () => {
        log.info({ graceMs: config.shutdownGraceMs }, "draining");
        sweeper.stop();
        grpc.setServing(false);
        flows?.close();
        // Removing this replica's record runs beside the drain, bounded by it.
        const withdrawn = heartbeat?.stop(config.shutdownGraceMs);
        healthListener?.setServing(false);
        await vendor.close();
        await Promise.all([
          grpc.shutdown(config.shutdownGraceMs),
          http.close(config.shutdownGraceMs),
        ]);
        await withdrawn;
        lifecycle.abort(shuttingDownError());
        await healthListener?.close();
        await store.close();
        await flowStates.close();
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
