// What the local IdP adds to oidc-provider's grants: RFC 8693 token exchange (a custom grant:
// an access token of this IdP exchanged for one narrowed to one audience), and the device
// grant's polling interval, advertised in the device authorization response and enforced at
// the token endpoint with slow_down (RFC 8628 §3.5), as real providers do.

import type { KoaContextWithOIDC, Provider } from "oidc-provider";
import { errors } from "oidc-provider";

export const tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange";
export const accessTokenType = "urn:ietf:params:oauth:token-type:access_token";

export interface ExchangeOptions {
  readonly apiScopes: readonly string[];
  readonly audiences: ReadonlySet<string> | undefined;
  readonly accessTtl: number;
}

export function registerTokenExchange(provider: Provider, opts: ExchangeOptions): void {
  provider.registerGrantType(
    tokenExchangeGrant,
    async (ctx: KoaContextWithOIDC) => {
      const p = ctx.oidc?.params ?? {};
      const client = ctx.oidc?.client;
      const audience = typeof p.audience === "string" ? p.audience : "";
      if (client === undefined) throw new errors.InvalidRequest("no client");
      if (p.subject_token_type !== accessTokenType) {
        throw new errors.InvalidRequest("subject_token_type must be an access token");
      }
      if (audience === "") throw new errors.InvalidRequest("audience is required");
      if (opts.audiences !== undefined && !opts.audiences.has(audience)) {
        throw new errors.InvalidTarget("unknown audience");
      }
      const value = String(p.subject_token ?? "");
      // A user's access token, or a client's (client_credentials).
      const user = await provider.AccessToken.find(value);
      const machine = user === undefined ? await provider.ClientCredentials.find(value) : undefined;
      const subject = user ?? machine;
      if (subject === undefined || subject.isExpired) {
        throw new errors.InvalidGrant("the subject token is invalid or expired");
      }
      const asked = typeof p.scope === "string" ? p.scope.split(" ").filter(Boolean) : [];
      const scope = (asked.length > 0 ? asked : [...opts.apiScopes])
        .filter((s) => opts.apiScopes.includes(s))
        .join(" ");
      const token =
        user !== undefined && user.grantId !== undefined
          ? new provider.AccessToken({
              accountId: user.accountId,
              client,
              grantId: user.grantId,
              scope,
              gty: "token_exchange",
            })
          : new provider.ClientCredentials({ client, scope });
      token.resourceServer = new provider.ResourceServer(audience, {
        audience,
        scope: opts.apiScopes.join(" "),
        accessTokenFormat: "opaque",
        accessTokenTTL: opts.accessTtl,
      });
      ctx.body = {
        access_token: await token.save(),
        issued_token_type: accessTokenType,
        token_type: "Bearer",
        expires_in: token.expiration,
        ...(scope !== "" ? { scope } : {}),
      };
    },
    new Set(["subject_token", "subject_token_type", "audience", "scope", "requested_token_type"]),
  );
}

/**
 * Advertises `intervalSec` and answers slow_down to a device code polled sooner than
 * `enforcedSec` after its previous poll (a provider may ask for more than it advertised).
 */
export function enforceDeviceInterval(
  provider: Provider,
  intervalSec: number,
  enforcedSec: number,
  now = Date.now,
): void {
  const lastPoll = new Map<string, number>();
  provider.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (route === "device_authorization" && ctx.status === 200) {
      ctx.body = { ...(ctx.body as Record<string, unknown>), interval: intervalSec };
      return;
    }
    const params = ctx.oidc?.params;
    if (
      route !== "token" ||
      params?.grant_type !== "urn:ietf:params:oauth:grant-type:device_code"
    ) {
      return;
    }
    const code = String(params.device_code ?? "");
    const t = now();
    const previous = lastPoll.get(code);
    lastPoll.set(code, t);
    const pending =
      (ctx.body as { error?: unknown } | undefined)?.error === "authorization_pending";
    if (pending && previous !== undefined && t - previous < enforcedSec * 1000) {
      ctx.status = 400;
      ctx.body = { error: "slow_down", error_description: "polled sooner than the interval" };
    }
  });
}
