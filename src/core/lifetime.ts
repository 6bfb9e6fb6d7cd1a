// The token lifetime policy, as pure functions of a token, a policy, the time
// and (for jitter) a random draw.

import type { Random } from "./clock.ts";

export interface LifetimePolicy {
  /** Fraction of the lifetime during which a token is fresh (0 < f <= 1). */
  readonly freshness: number;
  /** A token is never fresh closer than this to its expiry. */
  readonly refreshMarginMs: number;
  /** A token is expired for callers this long before its real expiry. */
  readonly clockSkewMs: number;
  /** Refresh starts up to this fraction of the lifetime before the fresh window ends. */
  readonly refreshJitter: number;
  /** Lifetime assumed when the provider sends no expires_in. */
  readonly defaultLifetimeMs: number;
}

export interface TokenTimes {
  /** When the token was obtained. */
  readonly issuedAt: number;
  /** When the provider says it expires. */
  readonly expiresAt: number;
}

export type TokenState = "fresh" | "stale" | "expired";

/** The end of the fresh window, before jitter. */
export function freshUntil(t: TokenTimes, p: LifetimePolicy): number {
  const lifetime = Math.max(0, t.expiresAt - t.issuedAt);
  return Math.min(t.issuedAt + p.freshness * lifetime, t.expiresAt - p.refreshMarginMs);
}

/** The instant after which callers must not be handed the token. */
export function unusableAt(t: TokenTimes, p: LifetimePolicy, minValidityMs = 0): number {
  return t.expiresAt - p.clockSkewMs - minValidityMs;
}

/**
 * When refresh of this token starts: the end of the fresh window moved randomly
 * earlier by up to `refreshJitter` of the lifetime, so tokens and replicas do
 * not stampede together. Never before issuance.
 */
export function refreshAt(t: TokenTimes, p: LifetimePolicy, random: Random): number {
  const lifetime = Math.max(0, t.expiresAt - t.issuedAt);
  const end = freshUntil(t, p);
  return Math.max(t.issuedAt, end - random() * p.refreshJitter * lifetime);
}

/**
 * The state of a token at `now`, given its (jittered) refresh time. A token that
 * would not stay valid for `minValidityMs` is expired for that caller.
 */
export function tokenState(
  t: TokenTimes,
  p: LifetimePolicy,
  refreshAtMs: number,
  now: number,
  minValidityMs = 0,
): TokenState {
  if (now >= unusableAt(t, p, minValidityMs)) return "expired";
  return now >= refreshAtMs ? "stale" : "fresh";
}
