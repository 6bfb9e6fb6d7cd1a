// Assembles one replica: the vendor over a store and the upstream client, the
// service mounted on the gRPC and the HTTP listeners, and a bounded drain.

import { readFileSync } from "node:fs";
import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import type { Config } from "./config.ts";
import type { Clock } from "./core/clock.ts";
import type { Logger } from "./core/logger.ts";
import { noopLogger } from "./core/logger.ts";
import type { TokenStore } from "./core/token-store.ts";
import { createTokenVendor, type TokenVendor } from "./core/token-vendor.ts";
import type { UpstreamClient } from "./core/upstream.ts";
import { createUpstreamClient } from "./idp/upstream-client.ts";
import { createGrpcServer, type GrpcServer } from "./rpc/grpc-server.ts";
import { createHttpServer } from "./rpc/http-server.ts";
import { createTokenService } from "./rpc/token-service.ts";
import { openStore } from "./store/open-store.ts";

export interface StartServerOptions {
  readonly config: Config;
  readonly logger?: Logger;
  readonly store?: TokenStore;
  /** Defaults to the openid-client based client built from config.providers. */
  readonly upstream?: UpstreamClient;
  readonly clock?: Clock;
  /** Adds services to the grpc-js server before it listens (the benchmark's echo). */
  readonly configureGrpc?: (server: GrpcServer["server"]) => void;
}

export interface RunningServer {
  readonly grpcPort: number;
  readonly httpPort: number;
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
  const store = opts.store ?? (await openStore(config, log));
  // One process owns a memory store; any other may be shared with other replicas.
  const shared = store.kind !== "memory";
  const upstream =
    opts.upstream ??
    createUpstreamClient({
      providers: new Map(
        [...config.providers].map(([name, p]) => [
          name,
          {
            issuer: p.issuer,
            tokenEndpoint: p.tokenEndpoint,
            revocationEndpoint: p.revocationEndpoint,
            clientId: p.clientId,
            clientSecret: p.clientSecret,
            authMethod: p.authMethod,
            timeoutMs: p.timeoutMs,
            allowInsecureHttp: p.allowInsecureHttp,
          },
        ]),
      ),
      signal: lifecycle.signal,
    });
  const vendor = createTokenVendor({
    store,
    upstream,
    providers: new Map(
      [...config.providers].map(([name, p]) => [
        name,
        { lifetime: p.lifetime, backoff: p.backoff, refreshScopes: p.refreshScopes },
      ]),
    ),
    grants: config.grants,
    logger: log,
    refreshTimeoutMs: config.refreshTimeoutMs,
    maxStreams: config.maxStreams,
    signal: lifecycle.signal,
    syncIntervalMs: shared ? config.syncIntervalMs : 0,
    claimLeaseMs: config.claimLeaseMs,
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
  });
  const impl = createTokenService({
    vendor,
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
  });
  const onInternalError = (err: unknown, method: string) =>
    log.error({ method, err: err instanceof Error ? err.message : String(err) }, "internal error");
  const services = [{ desc: TokenService, impl }];

  const grpc = createGrpcServer({
    services,
    reflectionDescriptorSet: readFileSync(descriptorSetPath),
    onInternalError,
  });
  opts.configureGrpc?.(grpc.server);
  const http = createHttpServer({ services, onInternalError });
  const grpcAddr = await grpc.listen(config.grpcListen);
  const httpAddr = await http.listen(config.httpListen);
  grpc.setServing(true);
  const sweeper = setInterval(() => {
    store.sweep(Date.now(), { signal: lifecycle.signal }).then(
      (r) => {
        if (r.generations + r.claims > 0) log.debug({ ...r }, "swept the store");
      },
      (err: unknown) =>
        log.warn({ err: err instanceof Error ? err.message : String(err) }, "sweep failed"),
    );
  }, config.sweepIntervalMs);
  sweeper.unref();
  log.info(
    {
      grpc: `${grpcAddr.host}:${grpcAddr.port}`,
      http: `${httpAddr.host}:${httpAddr.port}`,
      store: store.kind,
    },
    "tokenvend serving",
  );

  let drained: Promise<void> | undefined;
  return {
    grpcPort: grpcAddr.port,
    httpPort: httpAddr.port,
    vendor,
    store,
    shutdown() {
      drained ??= (async () => {
        log.info({ graceMs: config.shutdownGraceMs }, "draining");
        clearInterval(sweeper);
        grpc.setServing(false);
        await vendor.close();
        await Promise.all([
          grpc.shutdown(config.shutdownGraceMs),
          http.close(config.shutdownGraceMs),
        ]);
        lifecycle.abort();
        await store.close();
        log.info({}, "stopped");
      })();
      return drained;
    },
  };
}
