// The oidc-provider set-up of the local IdP: its clients, scopes, grants and lifetimes.
// Clients live in the storage adapter, so a secret can be changed while it runs (a rotation at
// the provider); a client may use private_key_jwt with a public JWK. Every confidential client
// may use client_credentials, refresh tokens, the authorization code flow (PKCE), the device
// grant and token exchange (./idp-grants.ts); logins go through ./idp-interactions.ts.
//
// Access tokens are opaque everywhere (ask the introspection endpoint what they carry). An
// `audience` form parameter on a client_credentials request is taken as the RFC 8707 resource
// indicator (oidc-provider knows only `resource`); like any resource indicator it must be an
// absolute URI. Every refresh rotates the refresh token; presenting a used one is invalid_grant
// and revokes the whole grant (reuse detection). Nothing is logged (`silent`).

import { generateKeyPairSync, type JsonWebKey } from "node:crypto";
import { type ClientModel, errors, type KoaContextWithOIDC, Provider } from "oidc-provider";
import { enforceDeviceInterval, registerTokenExchange, tokenExchangeGrant } from "./idp-grants.ts";
import { createMemoryAdapter } from "./idp-memory-adapter.ts";

export type LocalIdpAuthMethod =
  | "client_secret_basic"
  | "client_secret_post"
  | "private_key_jwt"
  | "none";

/** A client as registered: a public client ("none") has no secret. */
export interface LocalIdpClient {
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly authMethod: LocalIdpAuthMethod;
  /** private_key_jwt: the public key its assertions are checked with. */
  readonly publicJwk?: JsonWebKey | undefined;
  readonly redirectUris: readonly string[];
}

export interface IdpProviderOptions {
  readonly issuer: string;
  readonly clients: readonly LocalIdpClient[];
  /** API scopes besides openid and offline_access. */
  readonly apiScopes: readonly string[];
  /** Every scope: openid, offline_access and the API scopes. */
  readonly allScopes: readonly string[];
  /** Accepted audience (resource) values; undefined: any absolute URI. */
  readonly audiences: ReadonlySet<string> | undefined;
  readonly accessTtl: number;
  readonly refreshTtl: number;
  /** Register the token exchange grant. */
  readonly tokenExchange: boolean;
  /** The device grant's advertised and enforced polling intervals. */
  readonly deviceIntervalSec: number;
  readonly deviceEnforcedIntervalSec: number;
}

export interface IdpProvider {
  readonly provider: Provider;
  /** Registers (or re-registers) a client, e.g. with a new secret. */
  putClient(c: LocalIdpClient): Promise<void>;
}

const yearSec = 365 * 24 * 60 * 60;

const deviceGrant = "urn:ietf:params:oauth:grant-type:device_code";

function clientMetadata(c: LocalIdpClient, tokenExchange: boolean): Record<string, unknown> {
  const confidential = c.authMethod !== "none";
  return {
    client_id: c.clientId,
    ...(c.clientSecret !== undefined ? { client_secret: c.clientSecret } : {}),
    token_endpoint_auth_method: c.authMethod,
    ...(c.publicJwk !== undefined ? { jwks: { keys: [c.publicJwk] } } : {}),
    // A public client gets no client_credentials grant, and no token exchange.
    grant_types: [
      "refresh_token",
      "authorization_code",
      deviceGrant,
      ...(confidential ? ["client_credentials"] : []),
      ...(confidential && tokenExchange ? [tokenExchangeGrant] : []),
    ],
    response_types: ["code"],
    redirect_uris: [...c.redirectUris],
  };
}

export async function createIdpProvider(opts: IdpProviderOptions): Promise<IdpProvider> {
  const { issuer, clients, apiScopes, audiences, accessTtl, refreshTtl } = opts;
  const allScopes = [...opts.allScopes];
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const Adapter = createMemoryAdapter();
  const clientStore = new Adapter("Client");
  const putClient = (c: LocalIdpClient) =>
    clientStore.upsert(c.clientId, clientMetadata(c, opts.tokenExchange), undefined);
  for (const c of clients) await putClient(c);
  const provider = new Provider(issuer, {
    adapter: Adapter,
    jwks: { keys: [{ ...privateKey.export({ format: "jwk" }), use: "sig", alg: "RS256" }] },
    scopes: allScopes,
    // A client that may use refresh tokens gets one from every login (no offline_access dance).
    issueRefreshToken: async (_ctx: unknown, client: ClientModel) =>
      client.grantTypeAllowed("refresh_token"),
    cookies: { keys: [privateKey.export({ format: "jwk" }).d ?? "local-idp"] },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        userCodeInputSource: async (ctx: KoaContextWithOIDC, form: string) => {
          ctx.type = "html";
          ctx.body = `<!DOCTYPE html><title>local IdP</title>${form}<button type="submit" form="op.deviceInputForm">Continue</button>`;
        },
        userCodeConfirmSource: async (ctx: KoaContextWithOIDC, form: string) => {
          ctx.type = "html";
          ctx.body = `<!DOCTYPE html><title>local IdP</title>${form}<button type="submit" form="op.deviceConfirmForm">Continue</button><button type="submit" form="op.deviceConfirmForm" value="yes" name="abort">Deny</button>`;
        },
        successSource: async (ctx: KoaContextWithOIDC) => {
          ctx.type = "json";
          ctx.body = { device: "approved" };
        },
      },
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
      DeviceCode: 600,
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
  if (opts.tokenExchange) {
    registerTokenExchange(provider, { apiScopes, audiences, accessTtl });
  }
  enforceDeviceInterval(provider, opts.deviceIntervalSec, opts.deviceEnforcedIntervalSec);
  return { provider, putClient };
}
