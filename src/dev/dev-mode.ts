// `npm run dev`: a local identity provider in-process, a provider and a demo
// grant pointing at it, and a demo session holding a real refresh token.

import type { Config } from "../config.ts";
import type { TokenVendor } from "../core/token-vendor.ts";
import { startLocalIdp } from "./local-idp.ts";

const demoSessionId = "demo-session";
export const demoProvider = "local";
/** The redirect URI the local IdP's default client and the dev provider allow. */
export const devRedirectUri = "http://127.0.0.1:3000/callback";

export interface DevIdentity {
  /** Raw config (as if read from YAML) for the embedded defaults. */
  readonly config: unknown;
  /** The dev client's secret, handed over through the environment like any secret. */
  readonly clientSecret: string;
  readonly issuer: string;
  /** Stores the demo session's tokens, minted by the local provider. */
  storeDemoSession(config: Config, vendor: TokenVendor): Promise<void>;
  stop(): Promise<void>;
}

export async function startDevIdentity(): Promise<DevIdentity> {
  const idp = await startLocalIdp({ accessTokenTtlSec: 300 });
  const client = idp.client("tokenvend");
  const clientSecret = client.clientSecret ?? "";
  return {
    issuer: idp.issuer,
    clientSecret,
    config: {
      providers: {
        [demoProvider]: {
          issuer: idp.issuer,
          clientId: client.clientId,
          clientSecretEnv: "TOKENVEND_DEV_CLIENT_SECRET",
          authMethod: "client_secret_basic",
          // The README's browser login: the local IdP sends the browser back here.
          redirectUris: [devRedirectUri],
          tokenExchange: true,
        },
      },
      grants: {
        demo: {
          provider: demoProvider,
          scopes: ["api:read"],
          audience: "https://api.example.test",
        },
      },
    },
    async storeDemoSession(_config, vendor) {
      const minted = await idp.mintRefreshToken({
        clientId: client.clientId,
        accountId: "demo-user",
        scope: "openid offline_access api:read",
      });
      const now = Date.now();
      await vendor.storeUpstreamTokens({
        sessionId: demoSessionId,
        provider: demoProvider,
        tokens: {
          accessToken: minted.accessToken,
          refreshToken: minted.refreshToken,
          idToken: minted.idToken,
          tokenType: "Bearer",
          scopes: minted.scopes,
          issuedAt: now,
          expiresAt: now + minted.expiresInSec * 1000,
          subject: "demo-user",
          clientId: client.clientId,
        },
      });
    },
    stop: () => idp.stop(),
  };
}
