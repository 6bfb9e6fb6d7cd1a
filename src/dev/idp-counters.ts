// What the local IdP counts, for tests that assert how often tokenvend called the provider and
// with which headers. The counting runs around oidc-provider's own routing, so it sees every
// request, the ones rejected before the grant handler runs included.

import type { IncomingHttpHeaders } from "node:http";
import type { Provider } from "oidc-provider";

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

export interface RequestCounter {
  /** A snapshot. */
  readonly counters: LocalIdpCounters;
  reset(): void;
}

/** Counts the requests `provider` serves from now on. */
export function countRequests(provider: Provider): RequestCounter {
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
  return {
    get counters(): LocalIdpCounters {
      return { ...counts, tokenRequests: { ...counts.tokenRequests } };
    },
    reset() {
      counts = emptyCounts();
    },
  };
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
