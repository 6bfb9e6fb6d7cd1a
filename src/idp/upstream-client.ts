// The upstream OAuth2 client: client_credentials, refresh_token and RFC 7009
// revocation, built on oauth4webapi's request and processing steps. One HTTP
// request per call and no retries: retries belong to the core's policy.
//
// Authorization server metadata comes from configured endpoints, from
// discovery, or both (configured endpoints win). Discovery is lazy, cached,
// single-flight, runs under the service's own signal, and is tried again on
// the next call after a failure.

import * as oauth from "oauth4webapi";
import { abandonWait } from "../core/abandon-wait.ts";
import {
  type ClientCredentialsRequest,
  type RefreshRequest,
  type RevokeRequest,
  type UpstreamClient,
  UpstreamError,
  type UpstreamTokenResponse,
} from "../core/upstream.ts";
import { abortError, type CallContext, responseError, transportError } from "./upstream-errors.ts";

export type UpstreamAuthMethod = "client_secret_basic" | "client_secret_post" | "none";

export interface UpstreamProviderConfig {
  /** Issuer identifier, for OpenID Connect discovery. */
  readonly issuer?: string | undefined;
  /** Overrides the discovered token endpoint; enough on its own without issuer. */
  readonly tokenEndpoint?: string | undefined;
  /** Overrides the discovered revocation endpoint. */
  readonly revocationEndpoint?: string | undefined;
  readonly clientId: string;
  /** Required unless authMethod is "none". */
  readonly clientSecret?: string | undefined;
  readonly authMethod: UpstreamAuthMethod;
  /** Per outbound request (discovery, token, revocation). */
  readonly timeoutMs: number;
  /** Allows plain http:// to non-loopback hosts. Loopback is always allowed. */
  readonly allowInsecureHttp?: boolean | undefined;
}

/** The shape of `fetch` the client calls; wrap it to add headers or spans. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface UpstreamClientOptions {
  readonly providers: ReadonlyMap<string, UpstreamProviderConfig>;
  /** Defaults to the global fetch. */
  readonly fetch?: FetchLike;
  /** The service's lifetime: aborts every request and discovery when it ends. */
  readonly signal?: AbortSignal;
  /** Wall clock in ms, for Retry-After dates. Defaults to Date.now. */
  readonly now?: () => number;
}

interface ProviderState {
  readonly name: string;
  readonly cfg: UpstreamProviderConfig;
  readonly client: oauth.Client;
  readonly auth: oauth.ClientAuth;
  /** Metadata built from config alone (no issuer), or the discovered one. */
  metadata: oauth.AuthorizationServer | undefined;
  discovering: Promise<oauth.AuthorizationServer> | undefined;
}

interface TransportOptions {
  [oauth.customFetch]?: (
    url: string,
    init: oauth.CustomFetchOptions<string, unknown>,
  ) => Promise<Response>;
  [oauth.allowInsecureRequests]?: boolean;
}

const neverAborted = new AbortController().signal;

export function createUpstreamClient(opts: UpstreamClientOptions): UpstreamClient {
  const serviceSignal = opts.signal ?? neverAborted;
  const now = opts.now ?? Date.now;
  const fetchImpl = opts.fetch;
  const states = new Map<string, ProviderState>();
  for (const [name, cfg] of opts.providers) states.set(name, initProvider(name, cfg));

  const stateOf = (provider: string): ProviderState => {
    const st = states.get(provider);
    if (st === undefined) {
      throw new UpstreamError(`unknown provider "${provider}"`, { permanent: true });
    }
    return st;
  };

  /** Resolves the metadata; a caller's signal only abandons its own wait. */
  const metadataOf = async (
    st: ProviderState,
    signal: AbortSignal,
  ): Promise<oauth.AuthorizationServer> => {
    if (st.metadata !== undefined) return st.metadata;
    if (st.discovering === undefined) {
      const p = discover(st).then(
        (as) => {
          st.metadata = as;
          st.discovering = undefined;
          return as;
        },
        (err: unknown) => {
          st.discovering = undefined;
          throw err;
        },
      );
      // A failed discovery that no caller waits for any more is not unhandled.
      p.catch(() => {});
      st.discovering = p;
    }
    return abandonWait(st.discovering, signal, abortedWait);
  };

  const discover = async (st: ProviderState): Promise<oauth.AuthorizationServer> => {
    const issuer = new URL(st.cfg.issuer as string);
    const call = callContext(st, `discovery for provider "${st.name}"`, []);
    const as = await exchange(
      call,
      () => oauth.discoveryRequest(issuer, { signal: call.signal, ...transport(issuer) }),
      (response) => oauth.processDiscoveryResponse(issuer, response),
    );
    const merged: oauth.AuthorizationServer = {
      ...as,
      ...(st.cfg.tokenEndpoint !== undefined ? { token_endpoint: st.cfg.tokenEndpoint } : {}),
      ...(st.cfg.revocationEndpoint !== undefined
        ? { revocation_endpoint: st.cfg.revocationEndpoint }
        : {}),
    };
    // Discovered endpoints obey the same transport rule as configured ones.
    for (const key of ["token_endpoint", "revocation_endpoint"] as const) {
      const v = merged[key];
      if (v !== undefined)
        checkEndpoint(
          v,
          st,
          `discovered ${key}`,
          (m) => new UpstreamError(m, { permanent: false }),
        );
    }
    return merged;
  };

  /** One request under the call's signal, the service's signal and a timeout. */
  const callContext = (
    st: ProviderState,
    what: string,
    secrets: string[],
    signal?: AbortSignal,
  ): CallContext => {
    const timeout = AbortSignal.timeout(st.cfg.timeoutMs);
    const signals = [serviceSignal, timeout];
    if (signal !== undefined) signals.push(signal);
    const secret = st.cfg.clientSecret;
    return {
      what,
      secrets: secret !== undefined ? [...secrets, secret] : secrets,
      timeoutMs: st.cfg.timeoutMs,
      timeout,
      signal: AbortSignal.any(signals),
      now,
    };
  };

  const transport = (url: URL): TransportOptions => ({
    ...(fetchImpl !== undefined
      ? {
          [oauth.customFetch]: (u: string, init: oauth.CustomFetchOptions<string, unknown>) =>
            fetchImpl(u, init as RequestInit),
        }
      : {}),
    // Only reached for http:// URLs that passed checkEndpoint.
    ...(url.protocol === "http:" ? { [oauth.allowInsecureRequests]: true } : {}),
  });

  /** Request step, then processing step; every failure becomes an UpstreamError. */
  const exchange = async <T>(
    call: CallContext,
    send: () => Promise<Response>,
    process: (response: Response) => Promise<T>,
  ): Promise<T> => {
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
  };

  return {
    async clientCredentials(provider: string, req: ClientCredentialsRequest) {
      const st = stateOf(provider);
      const what = `client_credentials grant at provider "${provider}"`;
      const as = await metadataOf(st, req.signal);
      const url = endpoint(as, "token_endpoint", what);
      const params = new URLSearchParams();
      if (req.scopes !== undefined && req.scopes.length > 0)
        params.set("scope", req.scopes.join(" "));
      if (req.audience !== undefined && req.audience !== "") params.set("audience", req.audience);
      const call = callContext(st, what, [], req.signal);
      const res = await exchange(
        call,
        () =>
          oauth.clientCredentialsGrantRequest(as, st.client, st.auth, params, {
            signal: call.signal,
            ...transport(url),
          }),
        (response) => oauth.processClientCredentialsResponse(as, st.client, response),
      );
      return normalize(res);
    },

    async refresh(provider: string, req: RefreshRequest) {
      const st = stateOf(provider);
      const what = `refresh_token grant at provider "${provider}"`;
      if (req.refreshToken === "") {
        throw new UpstreamError(`${what}: the refresh token is empty`, { permanent: true });
      }
      const as = await metadataOf(st, req.signal);
      const url = endpoint(as, "token_endpoint", what);
      const call = callContext(st, what, [req.refreshToken], req.signal);
      const res = await exchange(
        call,
        () =>
          oauth.refreshTokenGrantRequest(as, st.client, st.auth, req.refreshToken, {
            signal: call.signal,
            ...(req.scopes !== undefined && req.scopes.length > 0
              ? { additionalParameters: { scope: req.scopes.join(" ") } }
              : {}),
            ...transport(url),
          }),
        (response) => oauth.processRefreshTokenResponse(as, st.client, response),
      );
      return normalize(res);
    },

    async revoke(provider: string, req: RevokeRequest) {
      const st = stateOf(provider);
      const what = `revocation at provider "${provider}"`;
      if (req.token === "") {
        throw new UpstreamError(`${what}: the token is empty`, { permanent: true });
      }
      const as = await metadataOf(st, req.signal);
      if (as.revocation_endpoint === undefined) {
        throw new UpstreamError(
          `provider "${provider}" has no revocation endpoint: set revocationEndpoint, or an issuer whose metadata lists revocation_endpoint`,
          { permanent: true },
        );
      }
      const url = endpoint(as, "revocation_endpoint", what);
      const call = callContext(st, what, [req.token], req.signal);
      await exchange(
        call,
        () =>
          oauth.revocationRequest(as, st.client, st.auth, req.token, {
            signal: call.signal,
            additionalParameters: { token_type_hint: req.tokenTypeHint },
            ...transport(url),
          }),
        (response) => oauth.processRevocationResponse(response),
      );
    },
  };
}

function initProvider(name: string, cfg: UpstreamProviderConfig): ProviderState {
  const at = `providers.${name}`;
  const fail = (m: string) => new TypeError(m);
  if (cfg.clientId === "") throw fail(`${at}.clientId must not be empty`);
  if (!Number.isFinite(cfg.timeoutMs) || cfg.timeoutMs <= 0) {
    throw fail(`${at}.timeoutMs must be a positive number; got ${cfg.timeoutMs}`);
  }
  if (cfg.issuer === undefined && cfg.tokenEndpoint === undefined) {
    throw fail(`${at}: set issuer (for discovery) or tokenEndpoint`);
  }
  const st: ProviderState = {
    name,
    cfg,
    client: { client_id: cfg.clientId },
    auth: clientAuth(cfg, at),
    metadata: undefined,
    discovering: undefined,
  };
  if (cfg.issuer !== undefined) checkEndpoint(cfg.issuer, st, "issuer", fail);
  if (cfg.tokenEndpoint !== undefined) checkEndpoint(cfg.tokenEndpoint, st, "tokenEndpoint", fail);
  if (cfg.revocationEndpoint !== undefined) {
    checkEndpoint(cfg.revocationEndpoint, st, "revocationEndpoint", fail);
  }
  if (cfg.issuer === undefined && cfg.tokenEndpoint !== undefined) {
    // Without an issuer there is nothing to discover. oauth4webapi needs an
    // issuer value; an ID token (which carries the real one) then fails its
    // issuer check, so OIDC providers should be configured with `issuer`.
    st.metadata = {
      issuer: new URL(cfg.tokenEndpoint).origin,
      token_endpoint: cfg.tokenEndpoint,
      ...(cfg.revocationEndpoint !== undefined
        ? { revocation_endpoint: cfg.revocationEndpoint }
        : {}),
    };
  }
  return st;
}

function clientAuth(cfg: UpstreamProviderConfig, at: string): oauth.ClientAuth {
  if (cfg.authMethod === "none") return oauth.None();
  if (cfg.clientSecret === undefined || cfg.clientSecret === "") {
    throw new TypeError(`${at}: authMethod ${cfg.authMethod} needs clientSecret`);
  }
  switch (cfg.authMethod) {
    case "client_secret_basic":
      return oauth.ClientSecretBasic(cfg.clientSecret);
    case "client_secret_post":
      return oauth.ClientSecretPost(cfg.clientSecret);
    default:
      throw new TypeError(
        `${at}.authMethod must be client_secret_basic, client_secret_post or none; got "${String(cfg.authMethod)}"`,
      );
  }
}

const loopbackHosts = new Set(["localhost", "[::1]"]);

/** https anywhere; http only to loopback hosts or with allowInsecureHttp. */
function checkEndpoint(
  value: string,
  st: Pick<ProviderState, "name" | "cfg">,
  option: string,
  fail: (message: string) => Error,
): void {
  const at = `providers.${st.name}.${option}`;
  const url = URL.parse(value);
  if (url === null) throw fail(`${at} must be an absolute URL`);
  if (url.protocol === "https:") return;
  if (url.protocol !== "http:") throw fail(`${at} must be an http(s) URL; got ${url.protocol}`);
  const host = url.hostname;
  const loopback = loopbackHosts.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (!loopback && st.cfg.allowInsecureHttp !== true) {
    throw fail(
      `${at}: plain http:// is allowed only to loopback hosts unless allowInsecureHttp is set`,
    );
  }
}

function endpoint(
  as: oauth.AuthorizationServer,
  key: "token_endpoint" | "revocation_endpoint",
  what: string,
): URL {
  const url = typeof as[key] === "string" ? URL.parse(as[key]) : null;
  if (url === null) {
    throw new UpstreamError(`${what}: the provider's metadata has no valid ${key}`, {
      permanent: true,
    });
  }
  return url;
}

function abortedWait(signal: AbortSignal): UpstreamError {
  return new UpstreamError("waiting for provider discovery was aborted", {
    permanent: false,
    cause: signal.reason,
  });
}

const canonicalTokenTypes: Readonly<Record<string, string>> = { bearer: "Bearer", dpop: "DPoP" };

/** expires_in → expiresInSec, scope → scopes, canonical token_type casing. */
export function normalize(res: oauth.TokenEndpointResponse): UpstreamTokenResponse {
  return {
    accessToken: res.access_token,
    tokenType: canonicalTokenTypes[res.token_type] ?? res.token_type,
    ...(res.expires_in !== undefined ? { expiresInSec: res.expires_in } : {}),
    ...(res.refresh_token !== undefined ? { refreshToken: res.refresh_token } : {}),
    ...(res.id_token !== undefined ? { idToken: res.id_token } : {}),
    ...(res.scope !== undefined ? { scopes: res.scope.split(" ").filter((s) => s !== "") } : {}),
  };
}
