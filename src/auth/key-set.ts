// An issuer's signing keys (JWKS), fetched and cached. jose's createRemoteJWKSet
// is not used because of two behaviours a token vault cannot have: once its
// cache is older than cacheMaxAge it refuses every token until a fetch
// succeeds (a JWKS endpoint that is down stops all callers, even those whose
// key is cached), and an unknown key id refetches on every call while the
// endpoint is failing (no cooldown after a failed fetch). Here:
// - a cached key keeps verifying whatever happens to the endpoint; a stale
//   set is refreshed in the background;
// - an unknown key id refetches at most once per cooldown, success or not,
//   with one fetch in flight; within the cooldown it fails closed (UNKNOWN_KEY);
// - the key set URL comes from configuration or from OIDC discovery.
// jose's createLocalJWKSet picks the key (kid, alg, use) from a fetched set.

import { createLocalJWKSet, type JSONWebKeySet, type JWSHeaderParameters } from "jose";

type CryptoKey = Awaited<ReturnType<ReturnType<typeof createLocalJWKSet>>>;

import { errors } from "jose";
import { keysUnavailable, unauthenticated } from "./caller.ts";
import type { JsonFetch } from "./issuer-fetch.ts";

export interface KeySetOptions {
  /** The issuer; its discovery document names the key set when jwksUri is not given. */
  readonly issuer: string;
  readonly jwksUri?: string | undefined;
  /** An unknown key id refetches at most this often. */
  readonly cooldownMs: number;
  /** A set older than this is refreshed in the background (its keys still verify). */
  readonly maxAgeMs: number;
  readonly timeoutMs: number;
  readonly now: () => number;
  /** Default: the global fetch. */
  readonly fetch?: JsonFetch | undefined;
}

type LocalSet = ReturnType<typeof createLocalJWKSet>;

export interface KeySet {
  /** The key for a token's header, as jwtVerify takes it. */
  (header: JWSHeaderParameters): Promise<CryptoKey>;
  /** Fetches of the set so far (tests and metrics). */
  readonly fetches: number;
}

export function createKeySet(opts: KeySetOptions): KeySet {
  const doFetch: JsonFetch =
    opts.fetch ?? ((url, init) => fetch(url, { ...init, redirect: "manual" }));
  let local: LocalSet | undefined;
  let fetchedAt = Number.NEGATIVE_INFINITY;
  let attemptedAt = Number.NEGATIVE_INFINITY;
  let inflight: Promise<void> | undefined;
  let jwksUri = opts.jwksUri;
  let fetches = 0;

  const getJson = async (url: string): Promise<unknown> => {
    const res = await doFetch(url, { signal: AbortSignal.timeout(opts.timeoutMs) });
    if (res.status !== 200) throw new Error(`${url} answered HTTP ${res.status}`);
    return res.json();
  };

  const refresh = () => {
    inflight ??= (async () => {
      attemptedAt = opts.now();
      fetches++;
      if (jwksUri === undefined) {
        const doc = await getJson(
          `${opts.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`,
        );
        const uri = (doc as { jwks_uri?: unknown }).jwks_uri;
        if (typeof uri !== "string") throw new Error("the discovery document has no jwks_uri");
        jwksUri = uri;
      }
      const set = (await getJson(jwksUri)) as JSONWebKeySet;
      local = createLocalJWKSet(set);
      fetchedAt = opts.now();
    })().finally(() => {
      inflight = undefined;
    });
    return inflight;
  };

  const keyFor = async (header: JWSHeaderParameters): Promise<CryptoKey> => {
    const now = opts.now();
    if (
      local !== undefined &&
      now - fetchedAt >= opts.maxAgeMs &&
      now - attemptedAt >= opts.cooldownMs
    ) {
      void refresh().catch(() => {});
    }
    if (local !== undefined) {
      try {
        return await local(header);
      } catch (err) {
        if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      }
    }
    // Unknown key id (or nothing fetched yet): refetch, at most once per cooldown.
    if (inflight === undefined && now - attemptedAt < opts.cooldownMs) {
      throw local === undefined
        ? keysUnavailable(opts.issuer)
        : unauthenticated("UNKNOWN_KEY", `no key of ${opts.issuer} has this key id`);
    }
    try {
      await refresh();
    } catch (err) {
      throw local === undefined
        ? keysUnavailable(opts.issuer, err)
        : unauthenticated("UNKNOWN_KEY", `no key of ${opts.issuer} has this key id`, err);
    }
    try {
      return await (local as LocalSet)(header);
    } catch (err) {
      throw unauthenticated("UNKNOWN_KEY", `no key of ${opts.issuer} has this key id`, err);
    }
  };
  return Object.defineProperty(keyFor, "fetches", { get: () => fetches }) as KeySet;
}
