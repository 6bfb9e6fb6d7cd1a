// What the flows' unit tests configure a provider with: a lifetime policy without jitter or
// margins (instants are exact on the fake clock) and a provider's flow settings.

import type { ProviderFlowSettings } from "../../src/core/flow-settings.ts";
import type { LifetimePolicy } from "../../src/core/lifetime.ts";

export const flowTestLifetime: LifetimePolicy = {
  freshness: 0.75,
  refreshMarginMs: 0,
  clockSkewMs: 0,
  refreshJitter: 0,
  defaultLifetimeMs: 3_600_000,
};

export const flowSettings = (over: Partial<ProviderFlowSettings> = {}): ProviderFlowSettings => ({
  clientId: "web",
  redirectUris: [],
  authorizationScopes: ["openid"],
  tokenExchange: false,
  maxUnusedRefreshMs: 0,
  webhook: undefined,
  ...over,
});
