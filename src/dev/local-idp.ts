// A real OpenID provider (oidc-provider 9) on a loopback port, for the dev mode
// and the tests: client_credentials, refresh tokens with rotation, revocation
// and introspection. Refresh tokens are minted through oidc-provider's own
// models (Grant, AccessToken, RefreshToken), so tests hold a real one without a
// browser login. It can be stopped and started again on the same port, keeping
// every token and grant, to play an outage.
//
// Access tokens are opaque everywhere (ask `introspect()` what they carry).
// An `audience` form parameter on a client_credentials request is taken as the
// RFC 8707 resource indicator (oidc-provider knows only `resource`); like any
// resource indicator it must be an absolute URI.

import { generateKeyPairSync, randomBytes } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import * as oauth from "oauth4webapi";
import { type ClientModel, errors, type KoaContextWithOIDC, Provider } from "oidc-provider";
import { createMemoryAdapter } from "./idp-memory-adapter.ts";

export type LocalIdpAuthMethod = "client_secret_basic" | "client_secret_post" | "none";

export interface LocalIdpClientOptions {
  readonly clientId: string;
  /** Generated when omitted (unless authMethod is "none"). */
  readonly clientSecret?: string;
  /**
   * How the client is registered. oidc-provider accepts client_secret_basic and
   * client_secret_post interchangeably for a secret client; to see which one a
   * request used, look at `counters.lastTokenRequestHeaders.authorization`.
   */
  readonly authMethod: LocalIdpAuthMethod;
}

export interface LocalIdpClient {
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly authMethod: LocalIdpAuthMethod;
}

export interface LocalIdpOptions {
  /** Defaults to 127.0.0.1. */
  readonly host?: string;
  /** Defaults to 0 (any free port); stop() and start() keep the actual one. */
  readonly port?: number;
  /** Defaults to "tokenvend" (client_secret_basic) and "tokenvend-post" (client_secret_post). */
  readonly clients?: readonly LocalIdpClientOptions[];
  /** API scopes besides openid and offline_access. Defaults to api:read and api:write. */
  readonly scopes?: readonly string[];
  /** Accepted audience (resource) values. Defaults to any absolute URI. */
  readonly audiences?: readonly string[];
  /** Lifetime of access tokens (both grants). Defaults to 300. */
  readonly accessTokenTtlSec?: number;
  /** Lifetime of each refresh token. Defaults to 14 days. */
  readonly refreshTokenTtlSec?: number;
}

export interface MintOptions {
  readonly clientId: string;
  readonly accountId: string;
  /**
   * Space-separated; defaults to openid, offline_access and every API scope.
   * offline_access is always added: oidc-provider ties refresh tokens without
   * it to a browser session, which a minted token does not have.
   */
  readonly scope?: string;
}

export interface MintedTokens {
  readonly accessToken: string;
  readonly refreshToken: string;
  /** When the scope has openid. */
  readonly idToken?: string;
  readonly expiresInSec: number;
  readonly scopes: readonly string[];
}

export interface LocalIdpCounters {
  /** Token endpoint requests by grant_type, rejected ones included ("" when absent). */
  readonly tokenRequests: Readonly<Record<string, number>>;
  /** Token endpoint answers with error invalid_grant. */
  readonly invalidGrant: number;
  readonly revocationRequests: number;
  readonly introspectionRequests: number;
  readonly discoveryRequests: number;
  /** Headers of the last token endpoint request, names lowercased (Authorization included). */
  readonly lastTokenRequestHeaders: Readonly<Record<string, string>> | undefined;
  /** Headers of the last request to any endpoint. */
  readonly lastRequestHeaders: Readonly<Record<string, string>> | undefined;
}

export interface LocalIdp extends AsyncDisposable {
  readonly issuer: string;
  readonly port: number;
  readonly tokenEndpoint: string;
  readonly revocationEndpoint: string;
  readonly introspectionEndpoint: string;
  readonly clients: readonly LocalIdpClient[];
  /** A snapshot. */
  readonly counters: LocalIdpCounters;
  readonly running: boolean;
  client(clientId: string): LocalIdpClient;
  resetCounters(): void;
  mintRefreshToken(opts: MintOptions): Promise<MintedTokens>;
  /** RFC 7009 at the revocation endpoint, as `clientId` (default: the first client). */
  revoke(token: string, clientId?: string): Promise<void>;
  /** RFC 7662 at the introspection endpoint, as `clientId` (default: the first client). */
  introspect(token: string, clientId?: string): Promise<oauth.IntrospectionResponse>;
  /** Closes the listener and every open connection; tokens and grants are kept. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
}

const defaultAccessTokenTtlSec = 300;
const defaultRefreshTokenTtlSec = 14 * 24 * 60 * 60;
const yearSec = 365 * 24 * 60 * 60;

export async function startLocalIdp(opts: LocalIdpOptions = {}): Promise<LocalIdp> {
  const host = opts.host ?? "127.0.0.1";
  const accessTtl = positiveInt(
    opts.accessTokenTtlSec,
    defaultAccessTokenTtlSec,
    "accessTokenTtlSec",
  );
  const refreshTtl = positiveInt(
    opts.refreshTokenTtlSec,
    defaultRefreshTokenTtlSec,
    "refreshTokenTtlSec",
  );
  const apiScopes = [...(opts.scopes ?? ["api:read", "api:write"])];
  const allScopes = ["openid", "offline_access", ...apiScopes];
  const audiences = opts.audiences !== undefined ? new Set(opts.audiences) : undefined;
  const clients: LocalIdpClient[] = (
    opts.clients ?? [
      { clientId: "tokenvend", authMethod: "client_secret_basic" },
      { clientId: "tokenvend-post", authMethod: "client_secret_post" },
    ]
  ).map((c) => ({
    clientId: c.clientId,
    authMethod: c.authMethod,
    clientSecret:
      c.authMethod === "none"
        ? undefined
        : (c.clientSecret ?? randomBytes(24).toString("base64url")),
  }));
  if (clients.length === 0) throw new TypeError("startLocalIdp: clients must not be empty");

  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const server = createServer((req, res) => {
    if (handler !== undefined) handler(req, res);
    else res.writeHead(503).end();
  });
  let port = await listen(server, opts.port ?? 0, host);
  let running = true;
  const issuer = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;

  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const provider = new Provider(issuer, {
    adapter: createMemoryAdapter(),
    jwks: { keys: [{ ...privateKey.export({ format: "jwk" }), use: "sig", alg: "RS256" }] },
    clients: clients.map((c) => ({
      client_id: c.clientId,
      ...(c.clientSecret !== undefined ? { client_secret: c.clientSecret } : {}),
      token_endpoint_auth_method: c.authMethod,
      // A public client gets no client_credentials grant.
      grant_types:
        c.authMethod === "none" ? ["refresh_token"] : ["client_credentials", "refresh_token"],
      response_types: [],
      redirect_uris: [],
    })),
    scopes: allScopes,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        allowedPolicy: async (_ctx: unknown, client: ClientModel, token: { clientId: string }) =>
          client.clientAuthMethod !== "none" || token.clientId === client.clientId,
      },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx: unknown, client: ClientModel, token: { clientId: string }) =>
          token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        // `audience` on client_credentials stands for `resource`.
        defaultResource: async (ctx: KoaContextWithOIDC, _client: unknown, oneOf?: string[]) => {
          if (oneOf !== undefined) return oneOf;
          const audience = ctx.oidc?.body?.audience;
          return ctx.oidc?.params?.grant_type === "client_credentials" &&
            typeof audience === "string"
            ? audience
            : undefined;
        },
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx: unknown, resource: string) => {
          if (audiences !== undefined && !audiences.has(resource)) {
            throw new errors.InvalidTarget("unknown audience");
          }
          return {
            scope: apiScopes.join(" "),
            audience: resource,
            accessTokenFormat: "opaque",
            accessTokenTTL: accessTtl,
          };
        },
      },
    },
    ttl: {
      AccessToken: accessTtl,
      ClientCredentials: accessTtl,
      IdToken: 3600,
      RefreshToken: refreshTtl,
      Grant: Math.max(refreshTtl, yearSec),
      Session: 24 * 3600,
      Interaction: 3600,
    },
    // Every refresh returns a new refresh token; presenting a used one is
    // invalid_grant and revokes the whole grant (reuse detection).
    rotateRefreshToken: true,
    findAccount: async (_ctx: unknown, sub: string) => ({
      accountId: sub,
      claims: async () => ({ sub }),
    }),
    clientBasedCORS: () => false,
    renderError: async (ctx: KoaContextWithOIDC, out: Record<string, string>) => {
      ctx.type = "json";
      ctx.body = out;
    },
  });
  provider.silent = true;

  // Counting happens around oidc-provider's own routing, so it sees every
  // request, the ones rejected before the grant handler runs included.
  let counts = emptyCounts();
  provider.use(async (ctx, next) => {
    const headers = flatHeaders(ctx.req.headers);
    counts.lastRequestHeaders = headers;
    await next();
    switch (ctx.oidc?.route) {
      case "token": {
        const grantType = ctx.oidc.params?.grant_type ?? ctx.oidc.body?.grant_type;
        const key = typeof grantType === "string" ? grantType : "";
        counts.tokenRequests[key] = (counts.tokenRequests[key] ?? 0) + 1;
        counts.lastTokenRequestHeaders = headers;
        if ((ctx.body as { error?: unknown } | undefined)?.error === "invalid_grant") {
          counts.invalidGrant++;
        }
        break;
      }
      case "revocation":
        counts.revocationRequests++;
        break;
      case "introspection":
        counts.introspectionRequests++;
        break;
      case "discovery":
        counts.discoveryRequests++;
        break;
    }
  });
  handler = provider.callback();

  const as: oauth.AuthorizationServer = {
    issuer,
    token_endpoint: `${issuer}/token`,
    revocation_endpoint: `${issuer}/token/revocation`,
    introspection_endpoint: `${issuer}/token/introspection`,
  };

  const clientOf = (clientId: string): LocalIdpClient => {
    const c = clients.find((x) => x.clientId === clientId);
    if (c === undefined) throw new TypeError(`local IdP: unknown client "${clientId}"`);
    return c;
  };
  const authOf = (c: LocalIdpClient): oauth.ClientAuth => {
    switch (c.authMethod) {
      case "client_secret_basic":
        return oauth.ClientSecretBasic(c.clientSecret ?? "");
      case "client_secret_post":
        return oauth.ClientSecretPost(c.clientSecret ?? "");
      case "none":
        return oauth.None();
    }
  };
  const insecure = { [oauth.allowInsecureRequests]: true };

  const stop = async (): Promise<void> => {
    if (!running) return;
    running = false;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  };

  return {
    issuer,
    get port() {
      return port;
    },
    tokenEndpoint: as.token_endpoint as string,
    revocationEndpoint: as.revocation_endpoint as string,
    introspectionEndpoint: as.introspection_endpoint as string,
    clients,
    get counters(): LocalIdpCounters {
      return { ...counts, tokenRequests: { ...counts.tokenRequests } };
    },
    get running() {
      return running;
    },
    client: clientOf,
    resetCounters() {
      counts = emptyCounts();
    },

    async mintRefreshToken(m) {
      const client = await provider.Client.find(m.clientId);
      if (client === undefined) throw new TypeError(`local IdP: unknown client "${m.clientId}"`);
      if (!client.grantTypeAllowed("refresh_token")) {
        throw new TypeError(`local IdP: client "${m.clientId}" may not use refresh tokens`);
      }
      if (m.accountId === "") throw new TypeError("local IdP: accountId must not be empty");
      const requested = (m.scope ?? allScopes.join(" ")).split(" ").filter((s) => s !== "");
      const unknown = requested.filter((s) => !allScopes.includes(s));
      if (unknown.length > 0) {
        throw new TypeError(`local IdP: unknown scope(s) ${unknown.join(", ")}`);
      }
      const scopes = [...new Set([...requested, "offline_access"])];
      const scope = scopes.join(" ");
      const grant = new provider.Grant({ accountId: m.accountId, clientId: m.clientId });
      grant.addOIDCScope(scope);
      const grantId = await grant.save();
      const authTime = Math.floor(Date.now() / 1000);
      const common = {
        accountId: m.accountId,
        client,
        grantId,
        scope,
        gty: "authorization_code",
        expiresWithSession: false,
      };
      const at = new provider.AccessToken(common);
      const accessToken = await at.save();
      const refreshToken = await new provider.RefreshToken({
        ...common,
        authTime,
        rotations: 0,
      }).save();
      let idToken: string | undefined;
      if (scopes.includes("openid")) {
        const t = new provider.IdToken({ sub: m.accountId, auth_time: authTime }, { client });
        t.scope = "openid";
        idToken = await t.issue({ use: "idtoken" });
      }
      return {
        accessToken,
        refreshToken,
        ...(idToken !== undefined ? { idToken } : {}),
        expiresInSec: at.expiration,
        scopes,
      };
    },

    async revoke(token, clientId = clients[0]?.clientId ?? "") {
      const c = clientOf(clientId);
      const res = await oauth.revocationRequest(
        as,
        { client_id: c.clientId },
        authOf(c),
        token,
        insecure,
      );
      await oauth.processRevocationResponse(res);
    },

    async introspect(token, clientId = clients[0]?.clientId ?? "") {
      const c = clientOf(clientId);
      const client = { client_id: c.clientId };
      const res = await oauth.introspectionRequest(as, client, authOf(c), token, insecure);
      return oauth.processIntrospectionResponse(as, client, res);
    },

    stop,
    async start() {
      if (running) return;
      port = await listen(server, port, host);
      running = true;
    },
    [Symbol.asyncDispose]: stop,
  };
}

function listen(
  server: ReturnType<typeof createServer>,
  port: number,
  host: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

interface MutableCounts {
  tokenRequests: Record<string, number>;
  invalidGrant: number;
  revocationRequests: number;
  introspectionRequests: number;
  discoveryRequests: number;
  lastTokenRequestHeaders: Readonly<Record<string, string>> | undefined;
  lastRequestHeaders: Readonly<Record<string, string>> | undefined;
}

function emptyCounts(): MutableCounts {
  return {
    tokenRequests: {},
    invalidGrant: 0,
    revocationRequests: 0,
    introspectionRequests: 0,
    discoveryRequests: 0,
    lastTokenRequestHeaders: undefined,
    lastRequestHeaders: undefined,
  };
}

function flatHeaders(h: IncomingHttpHeaders): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  return out;
}

function positiveInt(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || v <= 0) {
    throw new TypeError(`startLocalIdp: ${name} must be a positive integer; got ${v}`);
  }
  return v;
}
