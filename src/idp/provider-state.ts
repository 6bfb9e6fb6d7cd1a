// One provider as the upstream clients (upstream-client.ts, flow-client.ts) reach it: its
// validated config, its authorization server metadata (configured, discovered, or both;
// configured endpoints win), its client authentications (./client-auth.ts) and how one request
// runs (the call's, the service's and a timeout's signal; every failure an UpstreamError).
//
// Discovery is lazy, cached, single-flight, runs under the service's own signal, and is tried
// again on the next call after a failure.

import * as oauth from "oauth4webapi";
import { abandonWait } from "../core/abandon-wait.ts";
import { UpstreamError } from "../core/upstream.ts";
import { boundedFetch } from "./bounded-fetch.ts";
import { type ClientAuths, createClientAuths } from "./client-auth.ts";
import { abortError, type CallContext, responseError, transportError } from "./upstream-errors.ts";

export type UpstreamAuthMethod =
  | "client_secret_basic"
  | "client_secret_post"
  | "private_key_jwt"
  | "none";

export interface UpstreamProviderConfig {
  /** Issuer identifier, for OpenID Connect discovery. */
  readonly issuer?: string | undefined;
  /** Overrides the discovered token endpoint; enough on its own without issuer. */
  readonly tokenEndpoint?: string | undefined;
  /** Overrides the discovered revocation endpoint. */
  readonly revocationEndpoint?: string | undefined;
  /** Overrides the discovered authorization endpoint (authorization code flow). */
  readonly authorizationEndpoint?: string | undefined;
  /** Overrides the discovered device authorization endpoint (RFC 8628). */
  readonly deviceAuthorizationEndpoint?: string | undefined;
  readonly clientId: string;
  /** One secret; or clientSecrets. */
  readonly clientSecret?: string | undefined;
  /**
   * Several secrets, for rotation: the first is used; on invalid_client the next is tried, and
   * the one that worked is used from then on.
   */
  readonly clientSecrets?: readonly string[] | undefined;
  /** private_key_jwt (RFC 7523): a PKCS#8 PEM private key (RSA, EC P-256 or Ed25519) and its kid. */
  readonly privateKey?: { readonly pem: string; readonly kid?: string | undefined } | undefined;
  readonly authMethod: UpstreamAuthMethod;
  /** Per outbound request (discovery, token, revocation, authorization). */
  readonly timeoutMs: number;
  /** Allows plain http:// to non-loopback hosts. Loopback is always allowed. */
  readonly allowInsecureHttp?: boolean | undefined;
}

/** The shape of `fetch` the clients call; wrap it to add headers or spans. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface ProviderStateOptions {
  /** Defaults to the global fetch. */
  readonly fetch?: FetchLike | undefined;
  /** The service's lifetime: aborts every request and discovery when it ends. */
  readonly signal: AbortSignal;
  /** Wall clock in ms, for Retry-After dates. */
  readonly now: () => number;
  /** The largest response body read from the provider (./bounded-fetch.ts). */
  readonly maxResponseBytes: number;
  /** A provider's client switched to its secret number `index` after invalid_client. */
  readonly onClientSecretSwitch?: ((provider: string, index: number) => void) | undefined;
}

type MetadataKey =
  | "token_endpoint"
  | "revocation_endpoint"
  | "authorization_endpoint"
  | "device_authorization_endpoint";

export interface ProviderState {
  readonly name: string;
  readonly cfg: UpstreamProviderConfig;
  readonly client: oauth.Client;
  /** The authorization server metadata; a caller's signal only abandons its own wait. */
  metadata(signal: AbortSignal): Promise<oauth.AuthorizationServer>;
  /** The metadata's `key` as a URL, or a permanent UpstreamError naming what is missing. */
  endpoint(as: oauth.AuthorizationServer, key: MetadataKey, what: string): URL;
  /** The metadata's `key` as a URL, when it has a valid one. */
  endpointOrUndefined(
    as: oauth.AuthorizationServer,
    key: MetadataKey | "jwks_uri",
  ): URL | undefined;
  /** One request under the call's signal, the service's signal and the provider's timeout. */
  call(what: string, secrets: readonly string[], signal?: AbortSignal): CallContext;
  /** fetch and insecure-http options for oauth4webapi, for a request to `url`. */
  transport(url: URL): TransportOptions;
  /**
   * Runs a request authenticated as the client: on invalid_client it is sent again with the
   * next configured secret (each at most once); the one that worked is kept.
   */
  authenticated<T>(send: (auth: oauth.ClientAuth) => Promise<T>): Promise<T>;
}

export interface TransportOptions {
  [oauth.customFetch]?: (
    url: string,
    init: oauth.CustomFetchOptions<string, unknown>,
  ) => Promise<Response>;
  [oauth.allowInsecureRequests]?: boolean;
}

/** Request step, then processing step; every failure becomes an UpstreamError. */
export async function exchange<T>(
  call: CallContext,
  send: () => Promise<Response>,
  process: (response: Response) => Promise<T>,
): Promise<T> {
  if (call.signal.aborted) throw abortError(call);
  let response: Response;
  try {
    response = await send();
  } catch (err) {
    throw transportError(err, call);
  }
  try {
    return await process(response);
  } catch (err) {
    throw await responseError(err, response, call);
  }
}

export function createProviderState(
  name: string,
  cfg: UpstreamProviderConfig,
  opts: ProviderStateOptions,
): ProviderState {
  const at = `providers.${name}`;
  const fail = (m: string) => new TypeError(m);
  if (cfg.clientId === "") throw fail(`${at}.clientId must not be empty`);
  if (!Number.isFinite(cfg.timeoutMs) || cfg.timeoutMs <= 0) {
    throw fail(`${at}.timeoutMs must be a positive number; got ${cfg.timeoutMs}`);
  }
  if (cfg.issuer === undefined && cfg.tokenEndpoint === undefined) {
    throw fail(`${at}: set issuer (for discovery) or tokenEndpoint`);
  }
  const configured = {
    token_endpoint: cfg.tokenEndpoint,
    revocation_endpoint: cfg.revocationEndpoint,
    authorization_endpoint: cfg.authorizationEndpoint,
    device_authorization_endpoint: cfg.deviceAuthorizationEndpoint,
  };
  const check = (value: string, option: string, make: (m: string) => Error) =>
    checkEndpoint(value, `${at}.${option}`, cfg.allowInsecureHttp === true, make);
  if (cfg.issuer !== undefined) check(cfg.issuer, "issuer", fail);
  for (const [key, value] of Object.entries(configured)) {
    if (value !== undefined) check(value, camel(key), fail);
  }
  const overrides: Partial<oauth.AuthorizationServer> = Object.fromEntries(
    Object.entries(configured).filter(([, v]) => v !== undefined),
  );
  const auths: ClientAuths = createClientAuths(cfg, at);
  const secrets = auths.secrets;
  const fetchImpl = opts.fetch;
  // Every request reads its answer through the cap; the global fetch is looked up per request.
  const capped = boundedFetch(
    (u, init) => (fetchImpl ?? globalThis.fetch)(u, init),
    opts.maxResponseBytes,
  );
  let metadata: oauth.AuthorizationServer | undefined;
  let discovering: Promise<oauth.AuthorizationServer> | undefined;
  if (cfg.issuer === undefined && cfg.tokenEndpoint !== undefined) {
    // Without an issuer there is nothing to discover. oauth4webapi needs an
    // issuer value; an ID token (which carries the real one) then fails its
    // issuer check, so OIDC providers should be configured with `issuer`.
    metadata = { issuer: new URL(cfg.tokenEndpoint).origin, ...overrides };
  }

  const state: ProviderState = {
    name,
    cfg,
    client: { client_id: cfg.clientId },
    metadata(signal) {
      if (metadata !== undefined) return Promise.resolve(metadata);
      if (discovering === undefined) {
        const p = discover().then(
          (as) => {
            metadata = as;
            discovering = undefined;
            return as;
          },
          (err: unknown) => {
            discovering = undefined;
            throw err;
          },
        );
        // A failed discovery that no caller waits for any more is not unhandled.
        p.catch(() => {});
        discovering = p;
      }
      return abandonWait(discovering, signal, abortedWait);
    },
    endpointOrUndefined: (as, key) =>
      (typeof as[key] === "string" ? URL.parse(as[key]) : null) ?? undefined,
    endpoint(as, key, what) {
      const url = state.endpointOrUndefined(as, key);
      if (url === undefined) {
        throw new UpstreamError(`${what}: the provider's metadata has no valid ${key}`, {
          permanent: true,
        });
      }
      return url;
    },
    call(what, extra, signal) {
      const timeout = AbortSignal.timeout(cfg.timeoutMs);
      const signals = [opts.signal, timeout];
      if (signal !== undefined) signals.push(signal);
      return {
        what,
        secrets: [...extra, ...secrets],
        timeoutMs: cfg.timeoutMs,
        timeout,
        signal: AbortSignal.any(signals),
        now: opts.now,
      };
    },
    transport: (url) => ({
      [oauth.customFetch]: (u: string, init: oauth.CustomFetchOptions<string, unknown>) =>
        capped(u, init as RequestInit),
      // Only reached for http:// URLs that passed checkEndpoint.
      ...(url.protocol === "http:" ? { [oauth.allowInsecureRequests]: true } : {}),
    }),
    async authenticated(send) {
      const first = auths.current;
      for (let i = 0; ; i++) {
        const index = (first + i) % auths.list.length;
        try {
          const out = await send(auths.list[index]!);
          if (index !== auths.current) {
            auths.current = index;
            opts.onClientSecretSwitch?.(name, index);
          }
          return out;
        } catch (err) {
          const rejected = err instanceof UpstreamError && err.oauthError === "invalid_client";
          if (!rejected || i + 1 >= auths.list.length) throw err;
        }
      }
    },
  };

  const discover = async (): Promise<oauth.AuthorizationServer> => {
    const issuer = new URL(cfg.issuer as string);
    const call = state.call(`discovery for provider "${name}"`, []);
    const as = await exchange(
      call,
      () => oauth.discoveryRequest(issuer, { signal: call.signal, ...state.transport(issuer) }),
      (response) => oauth.processDiscoveryResponse(issuer, response),
    );
    const merged: oauth.AuthorizationServer = { ...as, ...overrides };
    // Discovered endpoints obey the same transport rule as configured ones.
    for (const key of Object.keys(configured) as MetadataKey[]) {
      const v = merged[key];
      if (typeof v === "string") {
        check(v, `discovered ${key}`, (m) => new UpstreamError(m, { permanent: false }));
      }
    }
    if (typeof merged.jwks_uri === "string") {
      check(
        merged.jwks_uri,
        "discovered jwks_uri",
        (m) => new UpstreamError(m, { permanent: false }),
      );
    }
    return merged;
  };

  return state;
}

const camel = (key: string) => key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

const loopbackHosts = new Set(["localhost", "[::1]"]);

/** https anywhere; http only to loopback hosts or with allowInsecureHttp. */
function checkEndpoint(
  value: string,
  at: string,
  allowInsecureHttp: boolean,
  fail: (message: string) => Error,
): void {
  const url = URL.parse(value);
  if (url === null) throw fail(`${at} must be an absolute URL`);
  if (url.protocol === "https:") return;
  if (url.protocol !== "http:") throw fail(`${at} must be an http(s) URL; got ${url.protocol}`);
  const host = url.hostname;
  const loopback = loopbackHosts.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (!loopback && !allowInsecureHttp) {
    throw fail(
      `${at}: plain http:// is allowed only to loopback hosts unless allowInsecureHttp is set`,
    );
  }
}

function abortedWait(signal: AbortSignal): UpstreamError {
  return new UpstreamError("waiting for provider discovery was aborted", {
    permanent: false,
    cause: signal.reason,
  });
}
