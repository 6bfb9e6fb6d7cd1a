// The provider's side of the flows tokenvend runs itself, on oauth4webapi: the authorization
// request (state, PKCE S256, nonce for OpenID Connect), the callback's validation and the code
// redemption (the ID token's claims, nonce and JWS signature checked against the provider's
// JWKS), the device authorization grant (RFC 8628) and token exchange (RFC 8693). It shares the
// providers' states (metadata, client authentication with secret rotation, timeouts) with the
// upstream client.

import * as oauth from "oauth4webapi";
import {
  accessTokenType,
  type DeviceAuthorization,
  type ExchangedToken,
  type FlowTokens,
  type FlowUpstream,
  tokenExchangeGrant,
} from "../core/flow-upstream.ts";
import { UpstreamError } from "../core/upstream.ts";
import { exchange, type ProviderState } from "./provider-state.ts";
import { normalize, stateOf } from "./upstream-client.ts";
import { type CallContext, clean } from "./upstream-errors.ts";

export function createFlowClient(states: ReadonlyMap<string, ProviderState>): FlowUpstream {
  /** The ID token's signature, against the provider's JWKS, when the response carried one. */
  const checkSignature = async (
    st: ProviderState,
    as: oauth.AuthorizationServer,
    response: Response,
    what: string,
    signal: AbortSignal,
  ) => {
    const jwks = st.endpointOrUndefined(as, "jwks_uri");
    if (jwks === undefined) {
      throw new UpstreamError(
        `${what}: the ID token cannot be verified: the provider's metadata has no jwks_uri (configure its issuer)`,
        { permanent: true },
      );
    }
    const call = st.call(`${what} (ID token signature)`, [], signal);
    await exchange(
      call,
      () => Promise.resolve(response),
      (r) =>
        oauth.validateApplicationLevelSignature(as, r, {
          signal: call.signal,
          ...st.transport(jwks),
        }),
    );
  };

  const withSubject = (res: oauth.TokenEndpointResponse, what: string): FlowTokens => {
    const sub = res.id_token !== undefined ? oauth.getValidatedIdTokenClaims(res)?.sub : undefined;
    return { ...normalize(res, what), ...(sub !== undefined ? { subject: sub } : {}) };
  };

  /**
   * A token request authenticated as the client, processed, and, when the response carries an
   * ID token, its signature checked; resolves with the tokens and the ID token's subject.
   */
  const tokensWithIdToken = async (
    st: ProviderState,
    as: oauth.AuthorizationServer,
    what: string,
    secrets: readonly string[],
    signal: AbortSignal,
    send: (auth: oauth.ClientAuth, call: CallContext) => Promise<Response>,
    process: (response: Response) => Promise<oauth.TokenEndpointResponse>,
  ): Promise<FlowTokens> => {
    const res = await st.authenticated(async (auth) => {
      const call = st.call(what, secrets, signal);
      let response: Response | undefined;
      const tokens = await exchange(
        call,
        () => send(auth, call),
        (r) => {
          response = r;
          return process(r);
        },
      );
      if (tokens.id_token !== undefined && response !== undefined) {
        await checkSignature(st, as, response, what, signal);
      }
      return tokens;
    });
    return withSubject(res, what);
  };

  return {
    async authorizationRequest(provider, req) {
      const st = stateOf(states, provider);
      const what = `authorization request at provider "${provider}"`;
      const as = await st.metadata(req.signal);
      const url = new URL(st.endpoint(as, "authorization_endpoint", what));
      const state = oauth.generateRandomState();
      const codeVerifier = oauth.generateRandomCodeVerifier();
      const nonce = req.scopes.includes("openid") ? oauth.generateRandomNonce() : undefined;
      const params: Record<string, string> = {
        client_id: st.cfg.clientId,
        response_type: "code",
        redirect_uri: req.redirectUri,
        scope: req.scopes.join(" "),
        state,
        code_challenge: await oauth.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: "S256",
        ...(nonce !== undefined ? { nonce } : {}),
        ...(req.loginHint ? { login_hint: req.loginHint } : {}),
        ...(req.prompt ? { prompt: req.prompt } : {}),
      };
      for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
      return { url: url.href, state, codeVerifier, nonce };
    },

    async redeemCode(provider, req) {
      const st = stateOf(states, provider);
      const what = `authorization code grant at provider "${provider}"`;
      const as = await st.metadata(req.signal);
      const tokenUrl = st.endpoint(as, "token_endpoint", what);
      let params: URLSearchParams;
      const callback = new URLSearchParams(req.callback);
      if (
        req.codeOnly &&
        as.authorization_response_iss_parameter_supported &&
        !callback.has("iss")
      ) {
        callback.set("iss", as.issuer);
      }
      try {
        params = oauth.validateAuthResponse(as, st.client, callback, req.state);
      } catch (err) {
        throw authResponseError(err, provider, [req.state]);
      }
      return tokensWithIdToken(
        st,
        as,
        what,
        [params.get("code") ?? "", req.codeVerifier],
        req.signal,
        (auth, call) =>
          oauth.authorizationCodeGrantRequest(
            as,
            st.client,
            auth,
            params,
            req.redirectUri,
            req.codeVerifier,
            { signal: call.signal, ...st.transport(tokenUrl) },
          ),
        (r) =>
          oauth.processAuthorizationCodeResponse(as, st.client, r, {
            expectedNonce: req.nonce ?? oauth.expectNoNonce,
            requireIdToken: req.nonce !== undefined,
          }),
      );
    },

    async startDevice(provider, req): Promise<DeviceAuthorization> {
      const st = stateOf(states, provider);
      const what = `device authorization at provider "${provider}"`;
      const as = await st.metadata(req.signal);
      const url = st.endpoint(as, "device_authorization_endpoint", what);
      const res = await st.authenticated((auth) => {
        const call = st.call(what, [], req.signal);
        return exchange(
          call,
          () =>
            oauth.deviceAuthorizationRequest(
              as,
              st.client,
              auth,
              req.scopes.length > 0 ? { scope: req.scopes.join(" ") } : {},
              { signal: call.signal, ...st.transport(url) },
            ),
          (r) => oauth.processDeviceAuthorizationResponse(as, st.client, r),
        );
      });
      return {
        deviceCode: res.device_code,
        userCode: res.user_code,
        verificationUri: res.verification_uri,
        verificationUriComplete: res.verification_uri_complete,
        expiresInSec: res.expires_in,
        intervalSec: res.interval,
      };
    },

    async pollDevice(provider, req) {
      const st = stateOf(states, provider);
      const what = `device code grant at provider "${provider}"`;
      const as = await st.metadata(req.signal);
      const url = st.endpoint(as, "token_endpoint", what);
      return tokensWithIdToken(
        st,
        as,
        what,
        [req.deviceCode],
        req.signal,
        (auth, call) =>
          oauth.deviceCodeGrantRequest(as, st.client, auth, req.deviceCode, {
            signal: call.signal,
            ...st.transport(url),
          }),
        (r) => oauth.processDeviceCodeResponse(as, st.client, r),
      );
    },

    async exchange(provider, req): Promise<ExchangedToken> {
      const st = stateOf(states, provider);
      const what = `token exchange at provider "${provider}"`;
      const as = await st.metadata(req.signal);
      const url = st.endpoint(as, "token_endpoint", what);
      const params = new URLSearchParams({
        subject_token: req.subjectToken,
        subject_token_type: req.subjectTokenType,
        audience: req.audience,
      });
      if (req.scopes.length > 0) params.set("scope", req.scopes.join(" "));
      if (req.requestedTokenType) params.set("requested_token_type", req.requestedTokenType);
      const res = await st.authenticated((auth) => {
        const call = st.call(what, [req.subjectToken], req.signal);
        return exchange(
          call,
          () =>
            oauth.genericTokenEndpointRequest(as, st.client, auth, tokenExchangeGrant, params, {
              signal: call.signal,
              ...st.transport(url),
            }),
          (r) => oauth.processGenericTokenEndpointResponse(as, st.client, r),
        );
      });
      const issued = res.issued_token_type;
      return {
        ...normalize(res, what),
        issuedTokenType: typeof issued === "string" ? issued : accessTokenType,
      };
    },
  };
}

/** An error in the callback itself (error=access_denied…) or a callback that fails validation. */
function authResponseError(err: unknown, provider: string, secrets: string[]): UpstreamError {
  const what = `authorization at provider "${provider}"`;
  if (err instanceof oauth.AuthorizationResponseError) {
    const description = clean(err.error_description, secrets);
    return new UpstreamError(
      `${what} failed: ${clean(err.error, secrets)}${description ? `: ${description}` : ""}`,
      { permanent: true, oauthError: err.error },
    );
  }
  const reason = err instanceof Error ? clean(err.message, secrets) : "invalid callback";
  return new UpstreamError(`${what}: the callback is not valid: ${reason}`, {
    permanent: true,
    oauthError: "invalid_request",
  });
}
