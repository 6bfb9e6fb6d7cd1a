// A cluster of replica processes sharing one MongoDB-protocol server, in front
// of the real oidc-provider behind a delay proxy.

import { create } from "@bufbuild/protobuf";
import { StoreUpstreamTokensRequestSchema } from "../../gen/tokenvend/v1/token_service_pb.js";
import { type LocalIdp, type LocalIdpOptions, startLocalIdp } from "../../src/dev/local-idp.ts";
import { generateKey } from "../../src/store/sealing.ts";
import { type DelayProxy, startDelayProxy } from "./delay-proxy.ts";
import { type ServerProcess, spawnServer } from "./server-process.ts";
import { api } from "./stack.ts";

export interface ClusterOptions {
  /** More top-level YAML lines (e.g. "claimLease: 2s"). */
  readonly extraYaml?: readonly string[];
  /** The provider's lifetime policy, as a YAML flow mapping. */
  readonly lifetime?: string;
  /** Access token lifetime at the identity provider. */
  readonly accessTokenTtlSec?: number;
  readonly idpOptions?: LocalIdpOptions;
  /** More lines of provider "idp" (e.g. "redirectUris: [http://…]"). */
  readonly providerYaml?: readonly string[];
}

export const clusterKey = `primary:${generateKey()}`;

export interface Cluster {
  idp: LocalIdp;
  proxy: DelayProxy;
  replicas: ServerProcess[];
  clients: ReturnType<typeof api>[];
  /** The database the replicas share. */
  db: string;
  /** Starts one more replica of the cluster, with `env` over the cluster's. */
  spawn(env?: Record<string, string>): Promise<ServerProcess>;
  store(
    sessionId: string,
    expiresInSec: number,
  ): Promise<{ accessToken: string; refreshToken: string }>;
}

export async function startCluster(
  t: { teardown(fn: () => unknown): void },
  uri: string,
  n: number,
  opts: ClusterOptions = {},
): Promise<Cluster> {
  const idp = await startLocalIdp({
    ...(opts.accessTokenTtlSec !== undefined ? { accessTokenTtlSec: opts.accessTokenTtlSec } : {}),
    ...opts.idpOptions,
  });
  t.teardown(() => idp.stop());
  const proxy = await startDelayProxy(idp.issuer);
  t.teardown(() => proxy.close());
  const client = idp.client("tokenvend");
  const db = `cluster_${process.pid}_${Date.now()}`;
  const yaml = [
    "grpc: { listen: 127.0.0.1:0 }",
    "http: { listen: 127.0.0.1:0 }",
    "auth: { disabled: true }",
    "logLevel: info",
    "shutdownGrace: 2s",
    ...(opts.extraYaml ?? []),
    "providers:",
    "  idp:",
    `    issuer: ${idp.issuer}`,
    `    tokenEndpoint: ${proxy.url}/token`,
    `    clientId: ${client.clientId}`,
    "    clientSecretEnv: IDP_SECRET",
    "    timeout: 10s",
    `    lifetime: ${opts.lifetime ?? "{ clockSkew: 5s, refreshMargin: 0s }"}`,
    "    backoff: { initial: 200ms, max: 1s }",
    ...(opts.providerYaml ?? []).map((l) => `    ${l}`),
  ].join("\n");
  const env = {
    IDP_SECRET: client.clientSecret ?? "",
    MONGODB_URI: uri,
    TOKENVEND_MONGODB_DB: db,
    TOKENVEND_ENCRYPTION_KEYS: clusterKey,
  };
  const replicas = await Promise.all(Array.from({ length: n }, () => spawnServer(yaml, env)));
  for (const r of replicas) t.teardown(() => r.kill("SIGKILL"));
  const clients = replicas.map((r) => api(r.grpc));
  for (const c of clients) t.teardown(() => c.close());
  return {
    idp,
    proxy,
    replicas,
    clients,
    db,
    async spawn(more = {}) {
      const r = await spawnServer(yaml, { ...env, ...more });
      t.teardown(() => r.kill("SIGKILL"));
      return r;
    },
    async store(sessionId, expiresInSec) {
      const minted = await idp.mintRefreshToken({ clientId: client.clientId, accountId: "alice" });
      await clients[0]!.storeUpstreamTokens(
        create(StoreUpstreamTokensRequestSchema, {
          sessionId,
          provider: "idp",
          accessToken: minted.accessToken,
          refreshToken: minted.refreshToken,
          expiry: { case: "expiresIn", value: BigInt(expiresInSec) },
        }),
      );
      return minted;
    },
  };
}
