// No refresh token left to expire unused: providers revoke refresh tokens that sit unused (often
// after 14-90 days), so for a provider with maxUnusedRefreshMs, sessions whose active refresh
// token was obtained longer ago than that are renewed in the background.
//
// Every scanIntervalMs, per provider, one replica of the cluster does the work: the one whose
// insert of the interval's lease record (`lease:unused:<provider>:<n>`) succeeds. It reads the
// sessions from the store's index (TokenStore.unusedSessions), oldest first, from where the
// last scan stopped (a watermark record, so a session whose renewal failed for good is not
// tried again every interval), and renews each through the vendor, which claims it like any
// refresh, at most ratePerSecond. A transient failure ends the batch and leaves the watermark
// before it; a permanent one is reported (renewal-failures.ts) and passed.

import type { Clock } from "./clock.ts";
import { isTokenVendError } from "./errors.ts";
import type { FlowProviders } from "./flow-settings.ts";
import { type FlowStateStore, fieldNumber, fieldText } from "./flow-state-store.ts";
import { errorText, type Logger } from "./logger.ts";
import { type Repeating, startRepeating } from "./repeating.ts";
import type { LiveRecord } from "./token.ts";
import type { TokenStore, UnusedCursor } from "./token-store.ts";

export interface UnusedRefreshOptions {
  /** The classified store. */
  readonly store: TokenStore;
  readonly states: FlowStateStore;
  readonly providers: FlowProviders;
  readonly renewSession: (
    sessionId: string,
    provider: string,
    generation: number,
  ) => Promise<LiveRecord>;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  readonly scanIntervalMs: number;
  /** Renewals per second, for the whole cluster (one replica scans an interval). */
  readonly ratePerSecond: number;
  readonly replicaId: string;
}

export interface UnusedRefresh extends Repeating {
  /** One scan of every provider now (what each interval runs); resolves with the renewals made. */
  scan(): Promise<number>;
}

const markKeepMs = 400 * 24 * 3600 * 1000;

export function startUnusedRefresh(opts: UnusedRefreshOptions): UnusedRefresh {
  const { clock, states, logger: log } = opts;
  const paceMs = 1000 / opts.ratePerSecond;
  const batch = Math.max(1, Math.floor((opts.ratePerSecond * opts.scanIntervalMs) / 1000));

  const scanProvider = async (provider: string, maxUnusedMs: number): Promise<number> => {
    const now = clock.now();
    const epoch = Math.floor(now / opts.scanIntervalMs);
    const lease = await states.create({
      id: `lease:unused:${provider}:${epoch}`,
      expiresAt: now + 2 * opts.scanIntervalMs,
      fields: { owner: opts.replicaId },
      secrets: {},
    });
    if (!lease) return 0;
    const markId = `mark:unused:${provider}`;
    const mark = await states.get(markId);
    const after: UnusedCursor | undefined =
      mark !== undefined
        ? { issuedAt: fieldNumber(mark, "issuedAt") ?? 0, sessionId: fieldText(mark, "sessionId") }
        : undefined;
    const found = await opts.store.unusedSessions(provider, {
      before: now - maxUnusedMs,
      after,
      limit: batch,
    });
    let renewed = 0;
    let last: UnusedCursor | undefined;
    for (const s of found) {
      if (opts.signal.aborted) break;
      if (renewed > 0 || last !== undefined) await clock.sleep(paceMs, opts.signal);
      try {
        await opts.renewSession(s.sessionId, provider, s.generation);
        renewed++;
      } catch (err) {
        const permanent =
          isTokenVendError(err, "REFRESH_FAILED") ||
          isTokenVendError(err, "NO_REFRESH_TOKEN") ||
          isTokenVendError(err, "SESSION_NOT_FOUND");
        if (!permanent) {
          log.warn(
            { provider, err: errorText(err) },
            "unused-refresh renewal failed; next scan retries",
          );
          break;
        }
      }
      last = s;
    }
    if (last !== undefined) {
      const record = {
        id: markId,
        expiresAt: clock.now() + markKeepMs,
        fields: { issuedAt: last.issuedAt, sessionId: last.sessionId },
        secrets: {},
      };
      if (!(await states.replace(record))) await states.create(record);
    }
    if (found.length > 0) {
      log.info(
        { provider, found: found.length, renewed },
        "renewed sessions with unused refresh tokens",
      );
    }
    return renewed;
  };

  const scan = async (): Promise<number> => {
    let total = 0;
    for (const [provider, p] of opts.providers) {
      if (p.maxUnusedRefreshMs <= 0) continue;
      try {
        total += await scanProvider(provider, p.maxUnusedRefreshMs);
      } catch (err) {
        if (opts.signal.aborted) break;
        log.warn({ provider, err: errorText(err) }, "unused-refresh scan failed");
      }
    }
    return total;
  };

  const anyProvider = [...opts.providers.values()].some((p) => p.maxUnusedRefreshMs > 0);
  const repeating = startRepeating({
    clock,
    intervalMs: anyProvider ? opts.scanIntervalMs : 0,
    signal: opts.signal,
    run: async () => {
      await scan();
    },
  });
  return { scan, stop: repeating.stop };
}
