// The port to upstream OAuth2 token endpoints. Implementations make one request
// per call and never retry: retries belong to the lifetime policy.

/** A successful token endpoint response, normalized. */
export interface UpstreamTokenResponse {
  readonly accessToken: string;
  readonly tokenType: string;
  /** expires_in as sent by the provider, when it sent one. */
  readonly expiresInSec?: number;
  /** Present only when the provider issued (or rotated) a refresh token. */
  readonly refreshToken?: string;
  readonly idToken?: string;
  /** The granted scopes, when the provider said. */
  readonly scopes?: readonly string[];
}

export interface UpstreamCallOptions {
  /** The service's own signal (never a single caller's). */
  readonly signal: AbortSignal;
}

export interface ClientCredentialsRequest extends UpstreamCallOptions {
  readonly scopes?: readonly string[];
  readonly audience?: string;
}

export interface RefreshRequest extends UpstreamCallOptions {
  readonly refreshToken: string;
  readonly scopes?: readonly string[];
}

export interface RevokeRequest extends UpstreamCallOptions {
  readonly token: string;
  readonly tokenTypeHint: "refresh_token" | "access_token";
}

export interface UpstreamClient {
  clientCredentials(
    provider: string,
    req: ClientCredentialsRequest,
  ): Promise<UpstreamTokenResponse>;
  refresh(provider: string, req: RefreshRequest): Promise<UpstreamTokenResponse>;
  revoke(provider: string, req: RevokeRequest): Promise<void>;
}

/**
 * Why an upstream call failed. `permanent` errors (invalid_grant, invalid_client,
 * unauthorized_client) stop retries for that token; all others are transient.
 */
export class UpstreamError extends Error {
  override readonly name = "UpstreamError";
  readonly permanent: boolean;
  /** The OAuth2 `error` code, when the provider sent one. */
  readonly oauthError: string | undefined;
  /** HTTP status, when a response arrived. */
  readonly status: number | undefined;
  /** From Retry-After on 429/503, in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(
    message: string,
    opts: {
      permanent: boolean;
      oauthError?: string | undefined;
      status?: number | undefined;
      retryAfterMs?: number | undefined;
      cause?: unknown;
    },
  ) {
    super(message, { cause: opts.cause });
    this.permanent = opts.permanent;
    this.oauthError = opts.oauthError;
    this.status = opts.status;
    this.retryAfterMs = opts.retryAfterMs;
  }
}

/** OAuth2 error codes after which retrying the same request cannot succeed. */
export const permanentOAuthErrors: ReadonlySet<string> = new Set([
  "invalid_grant",
  "invalid_client",
  "unauthorized_client",
]);
