// What the flows share: the token set a flow's tokens become, how a provider's failure in a
// flow reaches the caller, and the ids flow records are stored under.

import { createHash } from "node:crypto";
import type { Clock } from "./clock.ts";
import { renewedTokens } from "./cluster-refresh.ts";
import { isTokenVendError, TokenVendError } from "./errors.ts";
import type { FlowProviders } from "./flow-settings.ts";
import { type FlowRecord, type FlowStateStore, fieldText } from "./flow-state-store.ts";
import type { FlowTokens, FlowUpstream } from "./flow-upstream.ts";
import type { LifetimePolicy } from "./lifetime.ts";
import { errorText, type Logger } from "./logger.ts";
import type { StoreTokensInput } from "./session-writes.ts";
import type { TokenSet } from "./token.ts";
import { UpstreamError } from "./upstream.ts";

/** What a login flow (authorization code, device) is built from. */
export interface LoginFlowOptions {
  readonly states: FlowStateStore;
  readonly upstream: FlowUpstream;
  readonly providers: FlowProviders;
  readonly lifetimeOf: (provider: string) => LifetimePolicy;
  /** Stores a session's tokens as its next generation (the vendor's storeUpstreamTokens). */
  readonly storeTokens: (input: StoreTokensInput, signal?: AbortSignal) => Promise<number>;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The service's lifetime: provider calls run under it and upstreamTimeoutMs, not a caller's. */
  readonly signal: AbortSignal;
  readonly upstreamTimeoutMs: number;
}

/** The session's new token set: bound to the ID token's subject and the provider's client. */
export function flowTokenSet(
  res: FlowTokens,
  issuedAt: number,
  lifetime: LifetimePolicy,
  clientId: string,
): TokenSet {
  return { ...renewedTokens(undefined, res, issuedAt, lifetime), subject: res.subject, clientId };
}

/**
 * A flow's failure at the provider: its OAuth error (access_denied, invalid_grant…) or a
 * response that did not validate is AUTHORIZATION_FAILED with `oauth_error` in the metadata;
 * no answer, 5xx or 429 is UPSTREAM_UNAVAILABLE. Domain errors pass as they are.
 */
export function flowError(err: unknown, provider: string, what: string): unknown {
  if (!(err instanceof UpstreamError)) return err;
  const answered = err.status !== undefined && err.status < 500 && err.status !== 429;
  if (err.oauthError !== undefined || (answered && err.permanent) || err.status === 200) {
    const code = err.oauthError;
    return new TokenVendError(
      "AUTHORIZATION_FAILED",
      `${what} at provider "${provider}" failed${code !== undefined ? `: ${code}` : ": the provider's response did not validate"}`,
      { cause: err, metadata: code !== undefined ? { oauth_error: code } : {} },
    );
  }
  if (err.permanent && err.status === undefined) {
    return new TokenVendError("AUTHORIZATION_FAILED", err.message, { cause: err });
  }
  return new TokenVendError("UPSTREAM_UNAVAILABLE", `provider "${provider}" is unavailable`, {
    cause: err,
  });
}

/** A one-way id for a secret handle (a state): a dump of the store does not reveal live ones. */
export function handleId(kind: string, secret: string): string {
  return `${kind}:${createHash("sha256").update(secret).digest("base64url")}`;
}

/**
 * Who a login's session will belong to, as the access control decided for the call that
 * started it: `recordOwner` is sealed into the stored tokens; `owner`, when set, is the only
 * owner whose session the login may replace. Both unset: authentication is off.
 */
export interface LoginOwnership {
  readonly recordOwner?: string | undefined;
  readonly owner?: string | undefined;
}

/** The ownership as flow record fields (plain: ids, not secrets). */
export function ownershipFields(o: LoginOwnership | undefined): Record<string, string> {
  return {
    ...(o?.recordOwner !== undefined ? { recordOwner: o.recordOwner } : {}),
    ...(o?.owner !== undefined ? { owner: o.owner } : {}),
  };
}

/** The tokens a login stores, owned as the call that started it was. */
export function ownedStore(
  r: FlowRecord,
  base: { sessionId: string; provider: string; tokens: TokenSet },
): StoreTokensInput {
  const recordOwner = fieldText(r, "recordOwner") || undefined;
  const owner = fieldText(r, "owner") || undefined;
  return {
    ...base,
    tokens: recordOwner !== undefined ? { ...base.tokens, owner: recordOwner } : base.tokens,
    ...(owner !== undefined ? { owner } : {}),
  };
}

const storeRetryMaxMs = 60_000;

/**
 * Stores a login's tokens once the provider issued them: their refresh token is the session's
 * only one, so neither a caller's cancel nor a store outage may lose it. Runs under the service's
 * signal, not a caller's; STORE_UNAVAILABLE is retried (capped backoff) until written or the
 * service stops (undefined). Any other refusal (NOT_OWNER, a bad token set) is final and thrown.
 */
export async function storeLogin(
  opts: Pick<LoginFlowOptions, "storeTokens" | "clock" | "logger" | "signal">,
  input: StoreTokensInput,
): Promise<number | undefined> {
  for (let waitMs = 1_000; ; waitMs = Math.min(waitMs * 2, storeRetryMaxMs)) {
    try {
      return await opts.storeTokens(input, opts.signal);
    } catch (err) {
      if (opts.signal.aborted) return undefined;
      if (!isTokenVendError(err) || err.code !== "STORE_UNAVAILABLE") throw err;
      opts.logger.warn(
        { provider: input.provider, retryInMs: waitMs, err: errorText(err) },
        "storing a login failed",
      );
      await opts.clock.sleep(waitMs, opts.signal).catch(() => {});
      if (opts.signal.aborted) return undefined;
    }
  }
}
