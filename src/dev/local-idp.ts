// A real OpenID provider (oidc-provider 9) on a loopback port, for the dev mode
// and the tests: client_credentials, refresh tokens with rotation, revocation
// and introspection, the authorization code flow with PKCE (login and consent
// pages that a test drives over HTTP: ./idp-interactions.ts), the device grant,
// token exchange, secret rotation and private_key_jwt clients. Refresh tokens are minted through oidc-provider's own
// models (Grant, AccessToken, RefreshToken), so tests hold a real one without a
// browser login. It can be stopped and started again on the same port, keeping
// every token and grant, to play an outage.
//
// Beside it: the provider's configuration (./idp-provider.ts), the request
// counters (./idp-counters.ts) and the restartable listener (./idp-listener.ts).

import { type JsonWebKey, randomBytes } from "node:crypto";
import * as oauth from "oauth4webapi";
import { countRequests, type LocalIdpCounters } from "./idp-counters.ts";
import { withInteractions } from "./idp-interactions.ts";
import { startIdpListener } from "./idp-listener.ts";
import { createIdpProvider, type LocalIdpAuthMethod, type LocalIdpClient } from "./idp-provider.ts";

export type { LocalIdpAuthMethod, LocalIdpClient, LocalIdpCounters };

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
  /** private_key_jwt: the client's public key. */
  readonly publicJwk?: JsonWebKey;
  /** Where logins may return; defaults to http://127.0.0.1:3000/callback. */
  readonly redirectUris?: readonly string[];
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
  /** Register the token exchange grant (RFC 8693). Defaults to true. */
  readonly tokenExchange?: boolean;
  /**
   * The device grant's polling interval as advertised, and as enforced with slow_down
   * (default: the advertised one, which defaults to 5 s).
   */
  readonly deviceIntervalSec?: number;
  readonly deviceEnforcedIntervalSec?: number;
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

export interface LocalIdp extends AsyncDisposable {
  readonly issuer: string;
  readonly port: number;
  readonly tokenEndpoint: string;
  readonly revocationEndpoint: string;
  readonly introspectionEndpoint: string;
  readonly authorizationEndpoint: string;
  readonly deviceAuthorizationEndpoint: string;
  readonly clients: readonly LocalIdpClient[];
  /** Changes a client's secret at the provider (a rotation): the old one is refused from now on. */
  setClientSecret(clientId: string, secret: string): Promise<void>;
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
const defaultRedirectUri = "http://127.0.0.1:3000/callback";
const defaultRefreshTokenTtlSec = 14 * 24 * 60 * 60;

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
      c.authMethod === "none" || c.authMethod === "private_key_jwt"
        ? undefined
        : (c.clientSecret ?? randomBytes(24).toString("base64url")),
    publicJwk: c.publicJwk,
    redirectUris: c.redirectUris ?? [defaultRedirectUri],
  }));
  if (clients.length === 0) throw new TypeError("startLocalIdp: clients must not be empty");

  const listener = await startIdpListener(host, opts.port ?? 0);
  const issuer = `http://${host.includes(":") ? `[${host}]` : host}:${listener.port}`;
  const deviceIntervalSec = positiveInt(opts.deviceIntervalSec, 5, "deviceIntervalSec");
  const { provider, putClient } = await createIdpProvider({
    issuer,
    clients,
    apiScopes,
    allScopes,
    audiences,
    accessTtl,
    refreshTtl,
    tokenExchange: opts.tokenExchange ?? true,
    deviceIntervalSec,
    deviceEnforcedIntervalSec: positiveInt(
      opts.deviceEnforcedIntervalSec,
      deviceIntervalSec,
      "deviceEnforcedIntervalSec",
    ),
  });
  const requests = countRequests(provider);
  listener.serve(withInteractions(provider, provider.callback()));

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
      case "private_key_jwt":
        throw new TypeError(`local IdP: client "${c.clientId}" has no secret to call with`);
    }
  };
  const insecure = { [oauth.allowInsecureRequests]: true };

  return {
    issuer,
    get port() {
      return listener.port;
    },
    tokenEndpoint: as.token_endpoint as string,
    revocationEndpoint: as.revocation_endpoint as string,
    introspectionEndpoint: as.introspection_endpoint as string,
    authorizationEndpoint: `${issuer}/auth`,
    deviceAuthorizationEndpoint: `${issuer}/device/auth`,
    clients,
    async setClientSecret(clientId, secret) {
      const i = clients.findIndex((c) => c.clientId === clientId);
      const c = clients[i];
      if (c === undefined || c.clientSecret === undefined) {
        throw new TypeError(`local IdP: client "${clientId}" has no secret to change`);
      }
      clients[i] = { ...c, clientSecret: secret };
      await putClient(clients[i]);
    },
    get counters(): LocalIdpCounters {
      return requests.counters;
    },
    get running() {
      return listener.running;
    },
    client: clientOf,
    resetCounters() {
      requests.reset();
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

    stop: listener.stop,
    start: listener.start,
    [Symbol.asyncDispose]: listener.stop,
  };
}

function positiveInt(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || v <= 0) {
    throw new TypeError(`startLocalIdp: ${name} must be a positive integer; got ${v}`);
  }
  return v;
}
