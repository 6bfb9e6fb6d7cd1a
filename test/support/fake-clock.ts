// A deterministic Clock and a scripted Random for unit tests of the core: time
// moves only when a test says so, and every random draw is chosen by the test.
//
// Timers run on a monotonic timeline, like setTimeout: `advance()` moves both
// the wall clock and that timeline, `set()` jumps the wall clock alone (an NTP
// step), so it changes what now() returns without firing anything.

import type { Clock, Random, Timer } from "../../src/core/clock.ts";

export interface FakeClock extends Clock {
  /** Jumps the wall clock to `nowMs` without moving the timer timeline or firing anything. */
  set(nowMs: number): void;
  /**
   * Moves time forward by `ms`, firing every timer and sleep that falls due, in
   * due order (ties in arming order), each at its own instant. Between firings,
   * pending promise callbacks run to completion, so a timer armed by a callback
   * (directly or after awaiting the store or upstream) fires within the same
   * advance when it is due by the target.
   */
  advance(ms: number): Promise<void>;
  /** Moves the wall clock to `atMs` (not before now) with `advance`. */
  advanceTo(atMs: number): Promise<void>;
  /** Lets pending promise callbacks run without moving time. */
  settle(): Promise<void>;
  /** Timers armed with setTimer and not yet fired or cancelled. */
  pendingTimers(): number;
  /** Sleeps not yet resolved or aborted. */
  pendingSleeps(): number;
  /** Delay until the earliest pending timer or sleep, or undefined when none. */
  nextDueInMs(): number | undefined;
}

export interface FakeClockOptions {
  /** The initial wall-clock time in ms. */
  readonly nowMs?: number;
  /**
   * Most timers one advance() may fire; beyond it advance() throws, so a timer
   * that keeps re-arming itself with no delay fails the test instead of hanging it.
   */
  readonly maxFiresPerAdvance?: number;
}

interface Entry {
  readonly seq: number;
  readonly at: number;
  readonly kind: "timer" | "sleep";
  readonly fire: () => void;
}

/** 2023-11-14T22:13:20Z: a round instant far from any epoch edge. */
export const T0 = 1_700_000_000_000;

export function createFakeClock(opts: FakeClockOptions = {}): FakeClock {
  let wall = opts.nowMs ?? T0;
  let mono = 0;
  let seq = 0;
  const maxFires = opts.maxFiresPerAdvance ?? 10_000;
  const entries = new Map<number, Entry>();

  const arm = (delayMs: number, kind: Entry["kind"], fire: () => void): number => {
    const id = seq++;
    // Like setTimeout: a negative or NaN delay means "as soon as possible".
    const delay = Number.isFinite(delayMs) ? Math.max(0, delayMs) : 0;
    entries.set(id, { seq: id, at: mono + delay, kind, fire });
    return id;
  };

  const nextDue = (limit: number): Entry | undefined => {
    let best: Entry | undefined;
    for (const e of entries.values()) {
      if (e.at > limit) continue;
      if (best === undefined || e.at < best.at || (e.at === best.at && e.seq < best.seq)) best = e;
    }
    return best;
  };

  const moveTo = (at: number) => {
    wall += at - mono;
    mono = at;
  };

  const settle = async () => {
    // Promise callbacks all run before the next macrotask; a few rounds also
    // cover work that itself waits on a macrotask (setImmediate).
    for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
  };

  const count = (kind: Entry["kind"]) => {
    let n = 0;
    for (const e of entries.values()) if (e.kind === kind) n++;
    return n;
  };

  const clock: FakeClock = {
    now: () => wall,

    sleep(ms, signal) {
      return new Promise<void>((resolve, reject) => {
        if (signal?.aborted) {
          reject(signal.reason);
          return;
        }
        const onAbort = () => {
          entries.delete(id);
          reject(signal?.reason);
        };
        const id = arm(ms, "sleep", () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        });
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    },

    setTimer(ms, fn): Timer {
      const id = arm(ms, "timer", fn);
      return { cancel: () => entries.delete(id) };
    },

    set(nowMs) {
      wall = nowMs;
    },

    async advance(ms) {
      if (!(ms >= 0) || !Number.isFinite(ms)) {
        throw new RangeError(`advance(ms) needs a finite ms >= 0, got ${ms}`);
      }
      const target = mono + ms;
      let fired = 0;
      for (;;) {
        await settle();
        const due = nextDue(target);
        if (due === undefined) {
          if (mono === target) return;
          moveTo(target);
          continue;
        }
        if (++fired > maxFires) {
          throw new Error(
            `advance(${ms}) fired more than ${maxFires} timers: something re-arms itself without delay`,
          );
        }
        entries.delete(due.seq);
        moveTo(due.at);
        due.fire();
      }
    },

    advanceTo(atMs) {
      if (atMs < wall) throw new RangeError(`advanceTo(${atMs}) is before now (${wall})`);
      return clock.advance(atMs - wall);
    },

    settle,
    pendingTimers: () => count("timer"),
    pendingSleeps: () => count("sleep"),
    nextDueInMs() {
      const e = nextDue(Number.POSITIVE_INFINITY);
      return e === undefined ? undefined : e.at - mono;
    },
  };
  return clock;
}

export interface ScriptedRandom extends Random {
  /** How many values were drawn so far. */
  readonly draws: number;
  /** Appends values to draw after the current script. */
  push(...values: number[]): void;
}

/**
 * A Random that returns `script` in order, then `fallback` forever; without a
 * fallback, a draw past the script throws, so an unexpected draw fails the test.
 * A single number is a constant. Every value must lie in [0, 1), as for Math.random.
 */
export function scriptedRandom(
  script: number | readonly number[],
  fallback?: number,
): ScriptedRandom {
  const check = (v: number) => {
    if (!(v >= 0 && v < 1)) throw new RangeError(`a random value must lie in [0, 1), got ${v}`);
    return v;
  };
  const queue = typeof script === "number" ? [] : script.map(check);
  const rest =
    typeof script === "number"
      ? check(script)
      : fallback === undefined
        ? undefined
        : check(fallback);
  let draws = 0;
  const random = (() => {
    draws++;
    const v = queue.shift() ?? rest;
    if (v === undefined) throw new Error(`scripted random exhausted after ${draws - 1} draws`);
    return v;
  }) as ScriptedRandom;
  Object.defineProperty(random, "draws", { get: () => draws });
  random.push = (...values) => {
    queue.push(...values.map(check));
  };
  return random;
}

/** The largest double below 1: the supremum of what a Random may return. */
export const almostOne = 1 - 2 ** -53;
