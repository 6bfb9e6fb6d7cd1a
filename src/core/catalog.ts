// The configured providers and grants, as the core looks them up: an unknown
// name is PROVIDER_NOT_FOUND / GRANT_NOT_FOUND with a field violation, from
// every entry point alike.

import type { BackoffPolicy } from "./backoff.ts";
import { TokenVendError } from "./errors.ts";
import type { LifetimePolicy } from "./lifetime.ts";

export interface ProviderSettings {
  readonly lifetime: LifetimePolicy;
  readonly backoff: BackoffPolicy;
  /** Scopes asked for on refresh; empty keeps the grant's scopes. */
  readonly refreshScopes?: readonly string[];
}

export interface GrantSettings {
  readonly provider: string;
  readonly scopes: readonly string[];
  readonly audience?: string | undefined;
}

export interface Catalog {
  provider(name: string): ProviderSettings;
  grant(name: string): GrantSettings;
  hasProvider(name: string): boolean;
}

export function createCatalog(
  providers: ReadonlyMap<string, ProviderSettings>,
  grants: ReadonlyMap<string, GrantSettings>,
): Catalog {
  return {
    provider(name) {
      const p = providers.get(name);
      if (p === undefined) {
        throw new TokenVendError("PROVIDER_NOT_FOUND", `provider "${name}" is not configured`, {
          fieldViolations: [{ field: "provider", description: `unknown provider "${name}"` }],
        });
      }
      return p;
    },
    grant(name) {
      const g = grants.get(name);
      if (g === undefined) {
        throw new TokenVendError("GRANT_NOT_FOUND", `grant "${name}" is not configured`, {
          fieldViolations: [{ field: "grant", description: `unknown grant "${name}"` }],
        });
      }
      return g;
    },
    hasProvider: (name) => providers.has(name),
  };
}
