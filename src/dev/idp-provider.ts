// The oidc-provider set-up of the local IdP: its clients, scopes, grants and lifetimes.
//
// Access tokens are opaque everywhere (ask the introspection endpoint what they carry). An
// `audience` form parameter on a client_credentials request is taken as the RFC 8707 resource
// indicator (oidc-provider knows only `resource`); like any resource indicator it must be an
// absolute URI. Every refresh rotates the refresh token; presenting a used one is invalid_grant
// and revokes the whole grant (reuse detection). Nothing is logged (`silent`).

import { generateKeyPairSync } from "node:crypto";
import { type ClientModel, errors, type KoaContextWithOIDC, Provider } from "oidc-provider";
import { createMemoryAdapter } from "./idp-memory-adapter.ts";

export type LocalIdpAuthMethod = "client_secret_basic" | "client_secret_post" | "none";

/** A client as registered: a public client ("none") has no secret. */
export interface LocalIdpClient {
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly authMethod: LocalIdpAuthMethod;
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
}

const yearSec = 365 * 24 * 60 * 60;

export function createIdpProvider(opts: IdpProviderOptions): Provider {
  const { issuer, clients, apiScopes, audiences, accessTtl, refreshTtl } = opts;
  const allScopes = [...opts.allScopes];
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
  return provider;
}
