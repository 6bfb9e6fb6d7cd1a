// The upstream OAuth2 client: client_credentials, refresh_token and RFC 7009
// revocation, built on oauth4webapi's request and processing steps. One HTTP
// request per call and no retries: retries belong to the core's policy (the
// one exception: invalid_client is sent again with the next configured client
// secret, see provider-state.ts). A provider's metadata, client authentication
// and request plumbing live in provider-state.ts; the flows (authorization
// code, device, token exchange) in flow-client.ts.

import * as oauth from "oauth4webapi";
import {
  type ClientCredentialsRequest,
  type RefreshRequest,
  type RevokeRequest,
  type UpstreamClient,
  UpstreamError,
  type UpstreamTokenResponse,
} from "../core/upstream.ts";
import {
  createProviderState,
  exchange,
  type FetchLike,
  type ProviderState,
  type UpstreamProviderConfig,
} from "./provider-state.ts";
import { checkedTokenResponse } from "./token-response.ts";

export type { FetchLike, UpstreamAuthMethod, UpstreamProviderConfig } from "./provider-state.ts";

export interface UpstreamClientOptions {
  readonly providers: ReadonlyMap<string, UpstreamProviderConfig>;
  /** Defaults to the global fetch. */
  readonly fetch?: FetchLike;
  /** The service's lifetime: aborts every request and discovery when it ends. */
  readonly signal?: AbortSignal;
  /** Wall clock in ms, for Retry-After dates. Defaults to Date.now. */
  readonly now?: () => number;
  /** The largest response body read from a provider (config maxProviderResponseBytes). */
  readonly maxResponseBytes: number;
  /** A provider's client switched to its secret number `index` after invalid_client. */
  readonly onClientSecretSwitch?: (provider: string, index: number) => void;
}

/** Provider states shared with a flow client (flow-client.ts), made by createProviderStates. */
export interface SharedStatesOptions {
  readonly states: ReadonlyMap<string, ProviderState>;
}

const neverAborted = new AbortController().signal;

/** One ProviderState per configured provider, for the clients that share them. */
export function createProviderStates(opts: UpstreamClientOptions): Map<string, ProviderState> {
  const states = new Map<string, ProviderState>();
  for (const [name, cfg] of opts.providers) {
    states.set(
      name,
      createProviderState(name, cfg, {
        fetch: opts.fetch,
        signal: opts.signal ?? neverAborted,
        now: opts.now ?? Date.now,
        onClientSecretSwitch: opts.onClientSecretSwitch,
        maxResponseBytes: opts.maxResponseBytes,
      }),
    );
  }
  return states;
}

/** The state of `provider`; an unknown one is a permanent UpstreamError. */
export function stateOf(states: ReadonlyMap<string, ProviderState>, provider: string) {
  const st = states.get(provider);
  if (st === undefined) {
    throw new UpstreamError(`unknown provider "${provider}"`, { permanent: true });
  }
  return st;
}

export function createUpstreamClient(
  opts: UpstreamClientOptions | SharedStatesOptions,
): UpstreamClient {
  const states = "states" in opts ? opts.states : createProviderStates(opts);

  return {
    async clientCredentials(provider: string, req: ClientCredentialsRequest) {
      const st = stateOf(states, provider);
      const what = `client_credentials grant at provider "${provider}"`;
      const as = await st.metadata(req.signal);
      const url = st.endpoint(as, "token_endpoint", what);
      const params = new URLSearchParams();
      if (req.scopes !== undefined && req.scopes.length > 0)
        params.set("scope", req.scopes.join(" "));
      if (req.audience !== undefined && req.audience !== "") params.set("audience", req.audience);
      const res = await st.authenticated((auth) => {
        const call = st.call(what, [], req.signal);
        return exchange(
          call,
          () =>
            oauth.clientCredentialsGrantRequest(as, st.client, auth, params, {
              signal: call.signal,
              ...st.transport(url),
            }),
          (response) => oauth.processClientCredentialsResponse(as, st.client, response),
        );
      });
      return normalize(res, what);
    },

    async refresh(provider: string, req: RefreshRequest) {
      const st = stateOf(states, provider);
      const what = `refresh_token grant at provider "${provider}"`;
      if (req.refreshToken === "") {
        throw new UpstreamError(`${what}: the refresh token is empty`, { permanent: true });
      }
      const as = await st.metadata(req.signal);
      const url = st.endpoint(as, "token_endpoint", what);
      const res = await st.authenticated((auth) => {
        const call = st.call(what, [req.refreshToken], req.signal);
        return exchange(
          call,
          () =>
            oauth.refreshTokenGrantRequest(as, st.client, auth, req.refreshToken, {
              signal: call.signal,
              ...(req.scopes !== undefined && req.scopes.length > 0
                ? { additionalParameters: { scope: req.scopes.join(" ") } }
                : {}),
              ...st.transport(url),
            }),
          (response) => oauth.processRefreshTokenResponse(as, st.client, response),
        );
      });
      return normalize(res, what);
    },

    async revoke(provider: string, req: RevokeRequest) {
      const st = stateOf(states, provider);
      const what = `revocation at provider "${provider}"`;
      if (req.token === "") {
        throw new UpstreamError(`${what}: the token is empty`, { permanent: true });
      }
      const as = await st.metadata(req.signal);
      if (as.revocation_endpoint === undefined) {
        throw new UpstreamError(
          `provider "${provider}" has no revocation endpoint: set revocationEndpoint, or an issuer whose metadata lists revocation_endpoint`,
          { permanent: true },
        );
      }
      const url = st.endpoint(as, "revocation_endpoint", what);
      await st.authenticated((auth) => {
        const call = st.call(what, [req.token], req.signal);
        return exchange(
          call,
          () =>
            oauth.revocationRequest(as, st.client, auth, req.token, {
              signal: call.signal,
              additionalParameters: { token_type_hint: req.tokenTypeHint },
              ...st.transport(url),
            }),
          (response) => oauth.processRevocationResponse(response),
        );
      });
    },
  };
}

const canonicalTokenTypes: Readonly<Record<string, string>> = { bearer: "Bearer", dpop: "DPoP" };

/**
 * expires_in → expiresInSec, scope → scopes, canonical token_type casing; checked against the
 * rules a stored token obeys (./token-response.ts), so `what` fails cleanly on anything else.
 */
export function normalize(res: oauth.TokenEndpointResponse, what: string): UpstreamTokenResponse {
  return checkedTokenResponse(
    {
      accessToken: res.access_token,
      tokenType: canonicalTokenTypes[res.token_type] ?? res.token_type,
      ...(res.expires_in !== undefined ? { expiresInSec: res.expires_in } : {}),
      ...(res.refresh_token !== undefined ? { refreshToken: res.refresh_token } : {}),
      ...(res.id_token !== undefined ? { idToken: res.id_token } : {}),
      ...(res.scope !== undefined ? { scopes: res.scope.split(" ").filter((s) => s !== "") } : {}),
    },
    what,
  );
}
