// The port to a provider's side of the flows tokenvend runs itself: the authorization code flow
// with PKCE (RFC 6749, RFC 7636, OpenID Connect), the device authorization grant (RFC 8628) and
// token exchange (RFC 8693). Like UpstreamClient, one request per call and no retries; failures
// are UpstreamErrors whose `oauthError` is the provider's OAuth error code (access_denied,
// authorization_pending, slow_down, expired_token, invalid_grant, unsupported_grant_type…).

import type { UpstreamCallOptions, UpstreamTokenResponse } from "./upstream.ts";

export interface AuthorizationRequestInput extends UpstreamCallOptions {
  readonly redirectUri: string;
  readonly scopes: readonly string[];
  readonly loginHint?: string | undefined;
  readonly prompt?: string | undefined;
}

/** An authorization request: the URL to send the browser to and what must stay server-side. */
export interface AuthorizationRequest {
  readonly url: string;
  readonly state: string;
  readonly codeVerifier: string;
  /** Sent when "openid" is among the scopes: the ID token must then carry it. */
  readonly nonce: string | undefined;
}

export interface RedeemCodeInput extends UpstreamCallOptions {
  /** The callback's query parameters (code, state, iss, or error). */
  readonly callback: URLSearchParams;
  readonly state: string;
  readonly redirectUri: string;
  readonly codeVerifier: string;
  readonly nonce: string | undefined;
  /**
   * Only the code was handed over, not the whole callback: the provider is known from the
   * stored state, so a missing `iss` parameter is taken to be the provider's issuer.
   */
  readonly codeOnly: boolean;
}

/** Tokens from a flow, with the subject of their validated ID token when there was one. */
export interface FlowTokens extends UpstreamTokenResponse {
  readonly subject?: string;
}

export interface DeviceAuthorization {
  readonly deviceCode: string;
  readonly userCode: string;
  readonly verificationUri: string;
  readonly verificationUriComplete: string | undefined;
  readonly expiresInSec: number;
  /** The polling interval the provider asked for, when it did. */
  readonly intervalSec: number | undefined;
}

export interface ExchangeInput extends UpstreamCallOptions {
  readonly subjectToken: string;
  readonly subjectTokenType: string;
  readonly audience: string;
  readonly scopes: readonly string[];
  readonly requestedTokenType: string | undefined;
}

export interface ExchangedToken extends UpstreamTokenResponse {
  /** RFC 8693 issued_token_type. */
  readonly issuedTokenType: string;
}

export interface FlowUpstream {
  /** A fresh state, PKCE verifier and (for OpenID Connect) nonce, and the URL that carries them. */
  authorizationRequest(
    provider: string,
    req: AuthorizationRequestInput,
  ): Promise<AuthorizationRequest>;
  /**
   * Validates the callback (state, issuer, error) and redeems its code with the verifier; when a
   * nonce was sent, the ID token is required and its signature, issuer, audience and nonce checked.
   */
  redeemCode(provider: string, req: RedeemCodeInput): Promise<FlowTokens>;
  startDevice(
    provider: string,
    req: UpstreamCallOptions & { readonly scopes: readonly string[] },
  ): Promise<DeviceAuthorization>;
  /** One poll of the token endpoint with the device code. */
  pollDevice(
    provider: string,
    req: UpstreamCallOptions & { readonly deviceCode: string },
  ): Promise<FlowTokens>;
  exchange(provider: string, req: ExchangeInput): Promise<ExchangedToken>;
}

export const accessTokenType = "urn:ietf:params:oauth:token-type:access_token";
export const tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange";
