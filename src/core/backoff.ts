// Backoff after transient refresh failures, as pure functions: whether to retry
// is decided apart from how long to wait, and randomness is injected.

import type { Random } from "./clock.ts";

export interface BackoffPolicy {
  readonly initialMs: number;
  readonly multiplier: number;
  readonly maxMs: number;
  /** Each delay is shortened by a random fraction up to this (0..1). */
  readonly jitter: number;
  /** Longest Retry-After honoured; a longer one is capped to this. */
  readonly maxRetryAfterMs: number;
}

/**
 * Delay before retry number `attempt` (1 = the first retry after one failure):
 * exponential, capped, with jitter; never shorter than the provider's Retry-After.
 */
export function backoffDelayMs(
  attempt: number,
  p: BackoffPolicy,
  random: Random,
  retryAfterMs?: number,
): number {
  const exp = Math.min(p.maxMs, p.initialMs * p.multiplier ** Math.max(0, attempt - 1));
  const jittered = exp * (1 - p.jitter * random());
  if (retryAfterMs === undefined) return Math.round(jittered);
  return Math.round(Math.max(jittered, Math.min(retryAfterMs, p.maxRetryAfterMs)));
}
