// A real tokenvend replica on free loopback ports in front of a real
// oidc-provider, plus real clients for it.

import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import {
  CompleteAuthorizationRequestSchema,
  CompleteAuthorizationResponseSchema,
  ExchangeTokenRequestSchema,
  ExchangeTokenResponseSchema,
  GetAllUpstreamCredentialsRequestSchema,
  GetAllUpstreamCredentialsResponseSchema,
  GetTokenRequestSchema,
  GetTokenResponseSchema,
  GetValidTokensRequestSchema,
  GetValidTokensResponseSchema,
  RevokeSessionRequestSchema,
  RevokeSessionResponseSchema,
  StartAuthorizationRequestSchema,
  StartAuthorizationResponseSchema,
  StartDeviceAuthorizationRequestSchema,
  StartDeviceAuthorizationResponseSchema,
  type StoreUpstreamTokensRequest,
  StoreUpstreamTokensRequestSchema,
  StoreUpstreamTokensResponseSchema,
  TokenService,
  WatchTokenRequestSchema,
  WatchTokenResponseSchema,
} from "../../gen/tokenvend/v1/token_service_pb.js";
import { parseConfig } from "../../src/config.ts";
import type { TokenStore } from "../../src/core/token-store.ts";
import {
  type LocalIdp,
  type LocalIdpOptions,
  type MintedTokens,
  startLocalIdp,
} from "../../src/dev/local-idp.ts";
import { type RunningServer, type StartServerOptions, startServer } from "../../src/server.ts";
import { decodeGrpcStatusDetails, grpcStatusDetailsKey } from "../../src/transport/index.ts";
import { createGrpcJsClient, type GrpcCallError } from "./grpc-client.ts";

export interface StackOptions {
  /** Per-provider lifetime overrides (YAML shape, e.g. { clockSkew: "1s" }). */
  readonly lifetime?: Record<string, unknown>;
  readonly backoff?: Record<string, unknown>;
  readonly accessTokenTtlSec?: number;
  /** Use this IdP instead of starting one (e.g. behind a proxy: set idpUrl too). */
  readonly idp?: LocalIdp;
  /** Token endpoint base to use instead of the IdP's own (a proxy in front of it). */
  readonly tokenEndpoint?: string;
  readonly store?: TokenStore;
  /** More top-level options of the config (YAML shape, e.g. { syncInterval: "1h" }). */
  readonly config?: Record<string, unknown>;
  /** Passed on to startServer (telemetry providers, a logger). */
  readonly server?: Pick<StartServerOptions, "telemetry" | "logger" | "fetch">;
  /** More options of provider "idp" (YAML shape, e.g. { redirectUris: [...] }). */
  readonly provider?: Record<string, unknown>;
  /** More providers and grants (YAML shape), and the environment their secrets come from. */
  readonly providers?: Record<string, Record<string, unknown>>;
  readonly grants?: Record<string, Record<string, unknown>>;
  /** More environment for the config (secrets, TOKENVEND_AUDIT_HMAC_KEY...). */
  readonly env?: Record<string, string>;
  /** Options of the IdP the stack starts. */
  readonly idpOptions?: LocalIdpOptions;
  /** Metadata every call of `client` (and `store`) sends: credentials when auth is on. */
  readonly metadata?: Record<string, string>;
}

export interface Stack {
  readonly idp: LocalIdp;
  readonly server: RunningServer;
  readonly grpcAddress: string;
  readonly httpUrl: string;
  readonly client: ReturnType<typeof api>;
  /** Mints a real refresh token at the IdP for a new user. */
  mint(accountId?: string): Promise<MintedTokens>;
  /** Stores minted tokens for (session, provider) expiring in `expiresInSec`. */
  store(
    sessionId: string,
    minted: MintedTokens,
    expiresInSec: number,
    extra?: Partial<
      Pick<StoreUpstreamTokensRequest, "provider" | "refreshToken" | "subject" | "clientId">
    >,
  ): Promise<bigint>;
  stop(): Promise<void>;
}

export const defaultTestLifetime = {
  freshness: 0.75,
  refreshMargin: "0s",
  clockSkew: "5s",
  refreshJitter: 0,
};

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const idp =
    opts.idp ??
    (await startLocalIdp({ accessTokenTtlSec: opts.accessTokenTtlSec ?? 300, ...opts.idpOptions }));
  const client = idp.client("tokenvend");
  const post = idp.client("tokenvend-post");
  const env = {
    IDP_SECRET: client.clientSecret,
    IDP_POST_SECRET: post.clientSecret,
    ...opts.env,
  };
  const provider = (clientId: string, secretEnv: string, authMethod: string) => ({
    issuer: idp.issuer,
    ...(opts.tokenEndpoint !== undefined ? { tokenEndpoint: opts.tokenEndpoint } : {}),
    clientId,
    clientSecretEnv: secretEnv,
    authMethod,
    timeout: "2s",
    lifetime: { ...defaultTestLifetime, ...opts.lifetime },
    backoff: { initial: "200ms", max: "2s", jitter: 0, ...opts.backoff },
  });
  const config = parseConfig(
    {
      grpc: { listen: "127.0.0.1:0" },
      http: { listen: "127.0.0.1:0" },
      logLevel: "silent",
      shutdownGrace: "3s",
      ...opts.config,
      providers: {
        idp: {
          ...provider(client.clientId, "IDP_SECRET", "client_secret_basic"),
          ...opts.provider,
        },
        idp2: provider(post.clientId, "IDP_POST_SECRET", "client_secret_post"),
        ...opts.providers,
      },
      grants: {
        demo: { provider: "idp", scopes: ["api:read"], audience: "https://api.example.test" },
        "demo-post": { provider: "idp2", scopes: ["api:write"] },
        ...opts.grants,
      },
    },
    // Real files: API key files, audit keys and TLS files of the tests that configure them.
    { env, readFile: (p) => readFileSync(p, "utf8") },
  );
  const server = await startServer({
    config,
    ...(opts.store ? { store: opts.store } : {}),
    ...opts.server,
  });
  const grpcAddress = `127.0.0.1:${server.grpcPort}`;
  const c = api(grpcAddress, opts.metadata);
  return {
    idp,
    server,
    grpcAddress,
    httpUrl: `http://127.0.0.1:${server.httpPort}`,
    client: c,
    mint: (accountId = "alice") =>
      idp.mintRefreshToken({
        clientId: client.clientId,
        accountId,
        scope: "openid offline_access api:read",
      }),
    async store(sessionId, minted, expiresInSec, extra = {}) {
      const res = await c.storeUpstreamTokens(
        create(StoreUpstreamTokensRequestSchema, {
          sessionId,
          provider: "idp",
          accessToken: minted.accessToken,
          refreshToken: minted.refreshToken,
          idToken: minted.idToken ?? "",
          expiry:
            expiresInSec > 0
              ? { case: "expiresIn", value: BigInt(expiresInSec) }
              : { case: "expiresAt", value: timestampFromMs(Date.now() + expiresInSec * 1000) },
          scopes: [...minted.scopes],
          subject: "alice",
          clientId: client.clientId,
          ...extra,
        }),
      );
      return res.generation;
    },
    async stop() {
      c.close();
      await server.shutdown();
      if (opts.idp === undefined) await idp.stop();
    },
  };
}

/** Typed unary calls and the stream over @grpc/grpc-js. */
export function api(address: string, metadata?: Record<string, string>) {
  const g = createGrpcJsClient(TokenService, address, metadata);
  return {
    storeUpstreamTokens: g.unary(
      "StoreUpstreamTokens",
      StoreUpstreamTokensRequestSchema,
      StoreUpstreamTokensResponseSchema,
    ),
    getValidTokens: g.unary(
      "GetValidTokens",
      GetValidTokensRequestSchema,
      GetValidTokensResponseSchema,
    ),
    getAllUpstreamCredentials: g.unary(
      "GetAllUpstreamCredentials",
      GetAllUpstreamCredentialsRequestSchema,
      GetAllUpstreamCredentialsResponseSchema,
    ),
    getToken: g.unary("GetToken", GetTokenRequestSchema, GetTokenResponseSchema),
    revokeSession: g.unary(
      "RevokeSession",
      RevokeSessionRequestSchema,
      RevokeSessionResponseSchema,
    ),
    startAuthorization: g.unary(
      "StartAuthorization",
      StartAuthorizationRequestSchema,
      StartAuthorizationResponseSchema,
    ),
    completeAuthorization: g.unary(
      "CompleteAuthorization",
      CompleteAuthorizationRequestSchema,
      CompleteAuthorizationResponseSchema,
    ),
    startDeviceAuthorization: g.unary(
      "StartDeviceAuthorization",
      StartDeviceAuthorizationRequestSchema,
      StartDeviceAuthorizationResponseSchema,
    ),
    exchangeToken: g.unary(
      "ExchangeToken",
      ExchangeTokenRequestSchema,
      ExchangeTokenResponseSchema,
    ),
    watch: (req: Parameters<typeof create<typeof WatchTokenRequestSchema>>[1]) =>
      g.stream(
        "WatchToken",
        WatchTokenRequestSchema,
        WatchTokenResponseSchema,
        create(WatchTokenRequestSchema, req),
      ),
    close: () => g.close(),
  };
}

export const getValid = (
  sessionId: string,
  provider = "idp",
  extra: Record<string, unknown> = {},
) => create(GetValidTokensRequestSchema, { sessionId, provider, ...extra });

/** The gRPC code and ErrorInfo reason of a failed call. */
export function grpcFailure(err: unknown): {
  code: number;
  reason: string | undefined;
  fields: string[];
} {
  const e = err as GrpcCallError;
  const bin = e.metadata?.get(grpcStatusDetailsKey)[0];
  const d = bin instanceof Buffer ? decodeGrpcStatusDetails(bin) : undefined;
  return {
    code: e.code,
    reason: d?.errorInfo?.reason,
    fields: d?.badRequest?.fieldViolations.map((v) => v.field) ?? [],
  };
}

/** grpcFailure, with the ErrorInfo metadata and the status message. */
export function grpcFailureDetail(err: unknown): ReturnType<typeof grpcFailure> & {
  metadata: Record<string, string>;
  message: string;
} {
  const e = err as GrpcCallError;
  const bin = e.metadata?.get(grpcStatusDetailsKey)[0];
  const d = bin instanceof Buffer ? decodeGrpcStatusDetails(bin) : undefined;
  return {
    ...grpcFailure(err),
    metadata: { ...d?.errorInfo?.metadata },
    message: e.details ?? e.message,
  };
}

export type { grpc };
