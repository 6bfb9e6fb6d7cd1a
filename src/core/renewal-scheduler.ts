// The one owner of per-key timers: each key that needs background renewal
// (it has streams, it is a grant in recent use, or it holds a renewal not yet
// stored) has at most one timer, armed at the key's jittered refresh time, or
// at its next backoff attempt after a failure. Callers tell the scheduler when
// what it decides by changed (a new generation, a backoff, a first stream, a
// grant used again); it re-arms, or disarms when nothing needs the key.

import type { Clock, Timer } from "./clock.ts";
import type { KeyEntry } from "./key-cache.ts";

export interface RenewalSchedulerOptions {
  readonly clock: Clock;
  /** Background renewals of one key are at least this far apart (no hot loop on short tokens). */
  readonly minRefreshIntervalMs: number;
  /** Whether anything still needs the key renewed in the background. */
  readonly needed: (entry: KeyEntry) => boolean;
  /** Whether the entry is still the cached one of its key. */
  readonly holds: (entry: KeyEntry) => boolean;
  /** The key's renewal is due. */
  readonly onDue: (entry: KeyEntry) => void;
}

export interface RenewalScheduler {
  /** Re-arms the key's timer from its current state (or disarms it). */
  update(entry: KeyEntry): void;
  cancel(entry: KeyEntry): void;
  armed(entry: KeyEntry): boolean;
  /** Disarms every timer and arms no more (shutdown). */
  stop(): void;
  readonly count: number;
}

// The wait of a timer armed for a key already due: it runs in a second, so a state that
// keeps the key due (a failure nothing backed off) costs one attempt a second, not a hot loop.
const minDelayMs = 1_000;
// setTimeout holds at most ~24.8 days; longer waits are re-armed.
const maxTimerMs = 2 ** 31 - 1;

export function createRenewalScheduler(opts: RenewalSchedulerOptions): RenewalScheduler {
  const { clock } = opts;
  const timers = new Map<string, Timer>();
  let stopped = false;

  const cancel = (entry: KeyEntry) => {
    timers.get(entry.id)?.cancel();
    timers.delete(entry.id);
  };

  const arm = (entry: KeyEntry, delayMs: number, fn: () => void) => {
    timers.set(
      entry.id,
      clock.setTimer(delayMs, () => {
        timers.delete(entry.id);
        fn();
      }),
    );
  };

  const update = (entry: KeyEntry) => {
    cancel(entry);
    const s = entry.refresh;
    if (stopped || s.permanent !== undefined || !opts.holds(entry) || !opts.needed(entry)) return;
    if (entry.record === undefined && s.failures === 0) return;
    const at =
      s.failures > 0
        ? s.nextAttemptAt
        : Math.max(entry.refreshAt, entry.renewedAt + opts.minRefreshIntervalMs);
    // Due already: not at once, whatever the state says, so a key's timer cannot spin.
    const delay = at > clock.now() ? at - clock.now() : minDelayMs;
    if (delay > maxTimerMs) {
      arm(entry, maxTimerMs, () => update(entry));
      return;
    }
    arm(entry, delay, () => {
      // Nobody needs it any more: no renewal, and nothing armed.
      if (opts.needed(entry)) opts.onDue(entry);
    });
  };

  return {
    update,
    cancel,
    armed: (entry) => timers.has(entry.id),
    stop() {
      stopped = true;
      for (const t of timers.values()) t.cancel();
      timers.clear();
    },
    get count() {
      return timers.size;
    },
  };
}
