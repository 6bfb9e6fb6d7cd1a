// Assembles one replica: the vendor over a store and the upstream client, the
// service mounted on the gRPC and the HTTP listeners, and a bounded drain.
// With authentication on, both listeners authenticate every call but health's
// before its body is read, and the TokenService guard (rpc/access-control.ts)
// applies the policy and writes the audit stream (security.ts builds them).

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { type Config, configDefaults } from "./config.ts";
import { type Clock, systemClock } from "./core/clock.ts";
import { shuttingDownError } from "./core/errors.ts";
import type { FlowStateStore } from "./core/flow-state-store.ts";
import { createFlows, type Flows } from "./core/flows.ts";
import type { Logger } from "./core/logger.ts";
import { noopLogger } from "./core/logger.ts";
import { limitedFlowUpstream, limitedRevocations } from "./core/provider-limiter.ts";
import { createRenewalFailures } from "./core/renewal-failures.ts";
import { startStoreSweeper } from "./core/store-sweeper.ts";
import type { TokenStore } from "./core/token-store.ts";
import { createTokenVendor, type TokenVendor } from "./core/token-vendor.ts";
import type { UpstreamClient } from "./core/upstream.ts";
import { createFlowClient } from "./idp/flow-client.ts";
import { createProviderStates, createUpstreamClient } from "./idp/upstream-client.ts";
import { createWebhookSender } from "./idp/webhook-sender.ts";
import { callerLimitingOf, providerLimiterOf } from "./limits.ts";
import { startReplicaHeartbeat } from "./ops/replica-heartbeat.ts";
import { seedStore } from "./ops/seed.ts";
import { sessionJwtHeader } from "./rpc/session-jwt.ts";
import { createSecurity } from "./security.ts";
import { tokenServiceOf } from "./server-service.ts";
import { openServerTelemetry, type ServerTelemetryOptions } from "./server-telemetry.ts";
import { replicaRegistryOf } from "./store/mongo-replicas.ts";
import { openFlowStates } from "./store/open-flow-states.ts";
import { openStore } from "./store/open-store.ts";
import {
  attr,
  createFlowMetrics,
  createServiceLimitMetrics,
  createTlsMetrics,
  noopMeter,
} from "./telemetry/metrics.ts";
import {
  createGrpcServer,
  createHealthListener,
  createHttpServer,
  createPlainHttpListener,
  formatHostPort,
  type GrpcServer,
} from "./transport/index.ts";

export interface StartServerOptions {
  readonly config: Config;
  /**
   * A configuration error found only after the start (a key mismatch recorded by a database that
   * was unreachable at start): the replica cannot serve correctly and must stop (exit 2).
   */
  readonly onFatal?: (err: Error) => void;
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
  readonly telemetry?: ServerTelemetryOptions;
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
  // What a failed start opened is closed again, last opened first: nothing left listening.
  const undo: (() => unknown)[] = [];
  try {
    return await assemble(opts, undo);
  } catch (err) {
    for (const u of undo.reverse())
      await Promise.resolve()
        .then(u)
        .catch(() => {});
    throw err;
  }
}

async function assemble(opts: StartServerOptions, undo: (() => unknown)[]): Promise<RunningServer> {
  const { config } = opts;
  const log = opts.logger ?? noopLogger;
  const lifecycle = new AbortController();
  const store =
    opts.store ??
    (await openStore({
      store: config.store,
      keys: { keyText: config.encryptionKeys, keyFiles: config.encryptionKeyFiles },
      logger: log,
      onKeyMismatch: (err) => opts.onFatal?.(err),
      capacity: config.limits.store,
    }));
  if (opts.store === undefined) undo.push(() => store.close());
  if (config.bootstrap.length > 0) {
    const seeded = await seedStore(store, config.bootstrap, {
      nowMs: (opts.clock ?? systemClock).now(),
    }).catch((err: unknown) => {
      throw new Error("could not store the bootstrap tokens", { cause: err });
    });
    log.info(seeded, "bootstrap tokens: stored where their key had none");
  }
  const keys = { keyText: config.encryptionKeys, keyFiles: config.encryptionKeyFiles };
  const flowStates =
    opts.flowStates ??
    (await openFlowStates(config.store, keys, config.limits.flowStates.maxRecords));
  if (opts.flowStates === undefined) undo.push(() => flowStates.close());
  undo.push(() => lifecycle.abort(shuttingDownError()));
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
  undo.push(() => security.close());
  // Names this replica in refresh claims and in the shared store's replica records.
  const replicaId = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const upstream = security.audited(
    opts.upstream ?? createUpstreamClient({ states: providerStates }),
  );

  const { prometheus, tracer, meter, rpcTelemetry } = await openServerTelemetry(
    config,
    opts.telemetry,
  );
  undo.push(() => prometheus?.shutdown());
  const interceptors = rpcTelemetry !== undefined ? [rpcTelemetry.interceptor] : [];
  const flowMetrics = createFlowMetrics(meter ?? noopMeter);
  // Per provider: concurrent requests, their rate, the queue, Retry-After pauses.
  const limiter = providerLimiterOf(config, clock, meter ?? noopMeter);
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
    upstream: limitedRevocations(upstream, limiter),
    limiter,
    cacheMaxKeys: config.limits.cache.maxKeys,
    cacheMaxBytes: config.limits.cache.maxBytes,
    forcedRefresh: config.limits.forcedRefresh,
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
    // Audited inside the limiter: the stream records what reached the provider.
    upstream: limitedFlowUpstream(security.auditedFlows(createFlowClient(providerStates)), limiter),
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
    exchangeCache: config.limits.exchangeCache,
    forcedRefresh: config.limits.forcedRefresh,
  });
  const limiting = callerLimitingOf(config, meter ?? noopMeter, security.authenticate);
  const { authenticate } = limiting;
  const { services, errors } = tokenServiceOf({
    vendor,
    flows,
    security,
    config,
    limiting,
    log,
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
  });

  const grpc = createGrpcServer({
    services,
    reflectionDescriptorSet: readFileSync(descriptorSetPath),
    maxReceiveMessageBytes: config.maxMessageBytes,
    limits: config.transportLimits.grpc,
    maxHealthWatches: config.transportLimits.maxHealthWatches,
    errors,
    ...(authenticate !== undefined ? { authenticate } : {}),
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
    guard: {
      allowedHosts: config.allowedHosts,
      corsOrigins: config.corsOrigins,
      allowHeaders: ["Authorization", sessionJwtHeader],
    },
    ...(authenticate !== undefined ? { authenticate } : {}),
    ...(security.tls !== undefined ? { tls: security.tls } : {}),
    ...(interceptors.length > 0 ? { interceptors } : {}),
  });
  undo.push(
    () => vendor.close(),
    () => flows?.close(),
  );
  const grpcAddr = await grpc.listen(config.grpcListen);
  undo.push(() => grpc.shutdown(0));
  const httpAddr = await http.listen(config.httpListen);
  undo.push(() => http.close(0));
  const metricsListener =
    prometheus !== undefined ? createPlainHttpListener(prometheus.handle) : undefined;
  const promAddr =
    metricsListener !== undefined && config.prometheusListen !== undefined
      ? await metricsListener.listen(config.prometheusListen)
      : undefined;
  undo.push(() => metricsListener?.close(0));
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
  undo.push(() => healthListener?.close());
  grpc.setServing(true);
  if (meter !== undefined) {
    createServiceLimitMetrics(meter, { maxStreams: config.maxStreams });
    const tls = security.tls;
    if (tls !== undefined) createTlsMetrics(meter, () => tls.notAfterMs());
  }
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
