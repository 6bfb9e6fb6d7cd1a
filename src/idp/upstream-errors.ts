// Turns whatever an upstream call threw into an UpstreamError, in one place.
//
// What is permanent: exactly the OAuth error codes in `permanentOAuthErrors`
// (invalid_grant, invalid_client, unauthorized_client). They say the grant or
// the client is dead, so retrying the same request cannot succeed. Every other
// OAuth error (invalid_request, invalid_scope, invalid_target,
// unsupported_grant_type, temporarily_unavailable, …) is transient: none of them
// says the stored refresh token is bad, and the causes (an operator's scope or
// audience setting, a provider's bad deploy) are fixed without a new login, so
// the core keeps serving the current token and retries on its capped backoff
// instead of throwing away a session. Network errors, timeouts, 5xx, 429 and
// responses that are not a valid token response are transient too.
//
// Messages never carry token material: the oauth error code and a length-capped
// error_description with every value we sent (tokens, client secret) cut out;
// no response body, no request body. `cause` keeps library errors without the
// parsed bodies they carry (oauth4webapi puts whole token responses there).

import * as oauth from "oauth4webapi";
import { permanentOAuthErrors, UpstreamError } from "../core/upstream.ts";
import { parseRetryAfterMs } from "./retry-after.ts";

export interface CallContext {
  /** What was attempted, for messages: `refresh at provider "acme"`. */
  readonly what: string;
  /** Values that must never appear in a message (tokens, client secret). */
  readonly secrets: readonly string[];
  readonly timeoutMs: number;
  /** The call's own timeout signal, to tell a timeout from an abort. */
  readonly timeout: AbortSignal;
  /** The combined signal the request ran under. */
  readonly signal: AbortSignal;
  readonly now: () => number;
}

const maxDescriptionChars = 200;

/** The call ran out of time or was aborted (the service is stopping). */
export function abortError(ctx: CallContext): UpstreamError {
  const timedOut = ctx.timeout.aborted;
  return new UpstreamError(
    timedOut ? `${ctx.what} timed out after ${ctx.timeoutMs} ms` : `${ctx.what} was aborted`,
    { permanent: false, cause: ctx.signal.reason },
  );
}

/** No response arrived: DNS, connection refused or reset, TLS. */
export function transportError(err: unknown, ctx: CallContext): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (ctx.signal.aborted) return abortError(ctx);
  const code = errorCode(err) ?? errorCode((err as { cause?: unknown } | null)?.cause);
  const detail = err instanceof Error ? err.message : String(err);
  return new UpstreamError(
    `${ctx.what} failed: ${clean(detail, ctx.secrets)}${code ? ` (${code})` : ""}`,
    {
      permanent: false,
      cause: detachedCause(err),
    },
  );
}

/** A response arrived and the processing step rejected it. */
export async function responseError(
  err: unknown,
  response: Response,
  ctx: CallContext,
): Promise<UpstreamError> {
  if (err instanceof UpstreamError) return err;
  if (ctx.signal.aborted) return abortError(ctx);
  // Free the connection when the processing step did not read the body.
  if (!response.bodyUsed) await response.body?.cancel().catch(() => {});

  const status = response.status;
  const retryAfterMs =
    status === 429 || status === 503
      ? parseRetryAfterMs(response.headers.get("retry-after"), ctx.now())
      : undefined;

  let oauthError: string | undefined;
  let description: string | undefined;
  if (err instanceof oauth.ResponseBodyError) {
    oauthError = err.error;
    description = err.error_description;
  } else if (err instanceof oauth.WWWAuthenticateChallengeError) {
    // A 401 with WWW-Authenticate (RFC 6749 §5.2, invalid_client): the code is
    // in the challenge's parameters.
    const challenge = err.cause.find((c) => typeof c.parameters.error === "string");
    oauthError = challenge?.parameters.error;
    description = challenge?.parameters.error_description;
  }

  if (oauthError !== undefined) {
    const text = clean(description, ctx.secrets);
    return new UpstreamError(
      `${ctx.what} failed: HTTP ${status} ${clean(oauthError, ctx.secrets)}${text ? `: ${text}` : ""}`,
      {
        permanent: permanentOAuthErrors.has(oauthError),
        oauthError,
        status,
        retryAfterMs,
        cause: detachedCause(err),
      },
    );
  }

  const reason =
    err instanceof oauth.OperationProcessingError || err instanceof oauth.UnsupportedOperationError
      ? err.message
      : "unexpected response";
  return new UpstreamError(`${ctx.what} failed: HTTP ${status}: ${clean(reason, ctx.secrets)}`, {
    permanent: false,
    status,
    retryAfterMs,
    cause: detachedCause(err),
  });
}

/** Printable, length-capped, with every secret cut out. */
export function clean(text: string | undefined, secrets: readonly string[]): string {
  if (text === undefined) return "";
  let out = text.replace(/\p{Cc}/gu, " ");
  for (const s of secrets) {
    if (s.length > 0) out = out.split(s).join("[redacted]");
  }
  return out.length > maxDescriptionChars ? `${out.slice(0, maxDescriptionChars)}…` : out;
}

function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * oauth4webapi errors carry the parsed response body (tokens included) in
 * `cause`; keep only their name, code and fixed message. Network errors keep
 * their chain (socket errors hold no token material).
 */
function detachedCause(err: unknown): unknown {
  if (
    err instanceof oauth.ResponseBodyError ||
    err instanceof oauth.WWWAuthenticateChallengeError ||
    err instanceof oauth.OperationProcessingError ||
    err instanceof oauth.UnsupportedOperationError
  ) {
    const e = new Error(err.message);
    e.name = err.name;
    Object.defineProperty(e, "code", { value: err.code, enumerable: true });
    return e;
  }
  return err;
}
