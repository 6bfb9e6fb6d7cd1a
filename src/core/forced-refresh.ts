// Refreshes a caller forces by asking for a minimum validity the key's still-valid token no
// longer has (GetValidTokens, GetToken and ExchangeToken's min_validity_seconds). Without a
// bound, every such call would redeem a refresh token at the provider (and rotate it), so:
//
// - a minimum validity longer than the provider's tokens can live is refused at once,
//   FAILED_PRECONDITION (MIN_VALIDITY_UNREACHABLE), without calling the provider. How long they
//   live is known from a token the provider issued (a refresh, a grant, an exchange); a token a
//   caller stored may have been stored late, so it earns one refresh to find out;
// - the forced refreshes of one key are at least minIntervalMs apart and at most `budget` per
//   windowMs (a token bucket refilled evenly over the window, kept in the key's entry); beyond
//   that the caller gets RESOURCE_EXHAUSTED (REFRESH_THROTTLED) with the wait in RetryInfo.
//
// A caller that joins a refresh already in flight forces nothing. Pure functions of the key's
// state and the time, so every rule has an exact test on the fake clock.

import { attr, type VendorMetrics } from "../telemetry/metrics.ts";
import { TokenVendError } from "./errors.ts";
import type { KeyEntry, RefreshState } from "./key-cache.ts";
import type { LifetimePolicy } from "./lifetime.ts";
import type { LiveRecord } from "./token.ts";

export interface ForcedRefreshPolicy {
  /** Forced refreshes of one key are at least this far apart. */
  readonly minIntervalMs: number;
  /** At most this many per windowMs (burst included). */
  readonly budget: number;
  readonly windowMs: number;
}

/** The longest minimum validity a token of this lifetime can meet, or undefined when unknown. */
export function reachableValidityMs(
  record: LiveRecord,
  lifetime: LifetimePolicy,
): number | undefined {
  if (record.reason === "stored") return undefined;
  return record.tokens.expiresAt - record.tokens.issuedAt - lifetime.clockSkewMs;
}

/** MIN_VALIDITY_UNREACHABLE when the provider's tokens cannot live `minValidityMs`, else undefined. */
export function unreachableValidity(
  record: LiveRecord,
  lifetime: LifetimePolicy,
  minValidityMs: number,
  provider: string,
): TokenVendError | undefined {
  const reachable = reachableValidityMs(record, lifetime);
  if (reachable === undefined || minValidityMs <= reachable) return undefined;
  const lifetimeSec = Math.floor((record.tokens.expiresAt - record.tokens.issuedAt) / 1000);
  const maxSec = Math.max(0, Math.floor(reachable / 1000));
  return new TokenVendError(
    "MIN_VALIDITY_UNREACHABLE",
    `provider "${provider}" issues tokens that live ${lifetimeSec} s: at most ${maxSec} s of validity can be asked for`,
    {
      metadata: {
        provider,
        token_lifetime_seconds: String(lifetimeSec),
        max_min_validity_seconds: String(maxSec),
      },
    },
  );
}

/** The key's budget now, topped up for the time since it was last counted. */
function budgetAt(s: RefreshState, p: ForcedRefreshPolicy, now: number): number {
  if (Number.isNaN(s.forcedBudget)) return p.budget;
  const refill = ((now - s.forcedBudgetAt) * p.budget) / p.windowMs;
  return Math.min(p.budget, s.forcedBudget + Math.max(0, refill));
}

/** How long until a caller may force a refresh of this key (0: now). */
export function forcedRefreshWaitMs(s: RefreshState, p: ForcedRefreshPolicy, now: number): number {
  const interval = s.forcedAt === 0 ? 0 : s.forcedAt + p.minIntervalMs - now;
  const budget = budgetAt(s, p, now);
  const refill = budget >= 1 ? 0 : Math.ceil(((1 - budget) * p.windowMs) / p.budget);
  return Math.max(0, interval, refill);
}

/** Counts a forced refresh starting now. */
export function spendForcedRefresh(s: RefreshState, p: ForcedRefreshPolicy, now: number): void {
  s.forcedBudget = budgetAt(s, p, now) - 1;
  s.forcedBudgetAt = now;
  s.forcedAt = now;
}

/** RESOURCE_EXHAUSTED (REFRESH_THROTTLED): the caller may try again after `waitMs`. */
export function refreshThrottled(provider: string, waitMs: number): TokenVendError {
  return new TokenVendError(
    "RESOURCE_EXHAUSTED",
    `this token at provider "${provider}" was refreshed for a minimum validity too recently; try again in ${Math.ceil(waitMs / 1000)} s`,
    { reason: "REFRESH_THROTTLED", retryAfterMs: waitMs, metadata: { provider } },
  );
}

/** Admits the refreshes callers force on a key's still-valid token, counting refusals. */
export interface ForcedRefreshes {
  /**
   * Admits a refresh `minValidityMs` forces on the entry's still-valid `record`, counting it,
   * or throws MIN_VALIDITY_UNREACHABLE or REFRESH_THROTTLED. Joining a refresh already in
   * flight is always admitted and costs nothing.
   */
  admit(
    entry: KeyEntry,
    record: LiveRecord,
    lifetime: LifetimePolicy,
    minValidityMs: number,
    now: number,
  ): void;
}

export function createForcedRefreshes(
  policy: ForcedRefreshPolicy,
  metrics: Pick<VendorMetrics, "refreshRefusals">,
): ForcedRefreshes {
  const refused = (provider: string, reason: "min_validity_unreachable" | "throttled") =>
    metrics.refreshRefusals.add(1, { [attr.provider]: provider, [attr.refusalReason]: reason });
  return {
    admit(entry, record, lifetime, minValidityMs, now) {
      const unreachable = unreachableValidity(record, lifetime, minValidityMs, entry.provider);
      if (unreachable !== undefined) {
        refused(entry.provider, "min_validity_unreachable");
        throw unreachable;
      }
      if (entry.refresh.inflight !== undefined) return;
      const waitMs = forcedRefreshWaitMs(entry.refresh, policy, now);
      if (waitMs > 0) {
        refused(entry.provider, "throttled");
        throw refreshThrottled(entry.provider, waitMs);
      }
      spendForcedRefresh(entry.refresh, policy, now);
    },
  };
}
