// What the flows need to know of a provider, beside its lifetime policy (catalog.ts): the
// redirect URIs it may send users back to, the scopes a login asks for by default, whether it
// exchanges tokens, how long a refresh token may sit unused, and where failures are reported.
// Defaults live in config-defaults.ts; here every value is required.

import { TokenVendError } from "./errors.ts";

export interface WebhookSettings {
  readonly url: string;
  /** The Standard Webhooks secret (base64, optionally `whsec_`-prefixed). */
  readonly secret: string;
}

export interface ProviderFlowSettings {
  readonly clientId: string;
  /** Exact redirect URIs StartAuthorization accepts; empty: the flow is off for this provider. */
  readonly redirectUris: readonly string[];
  /** Scopes a login asks for when the caller names none. */
  readonly authorizationScopes: readonly string[];
  /** Whether the provider takes RFC 8693 token exchange. */
  readonly tokenExchange: boolean;
  /** Sessions whose refresh token was not used this long are renewed in the background; 0: off. */
  readonly maxUnusedRefreshMs: number;
  /** Where failures to renew a session are posted, signed. */
  readonly webhook: WebhookSettings | undefined;
}

export type FlowProviders = ReadonlyMap<string, ProviderFlowSettings>;

/** A provider's flow settings; PROVIDER_NOT_FOUND as the catalog says it. */
export function flowProvider(providers: FlowProviders, name: string): ProviderFlowSettings {
  const p = providers.get(name);
  if (p === undefined) {
    throw new TokenVendError("PROVIDER_NOT_FOUND", `provider "${name}" is not configured`, {
      fieldViolations: [{ field: "provider", description: `unknown provider "${name}"` }],
    });
  }
  return p;
}
