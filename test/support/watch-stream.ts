// Streams read by pulling, for tests that step through them: a push listener
// feeding a latest-value queue, as a slow subscriber sees its stream.

import type { WatchEvent, WatchTarget } from "../../src/core/token-stream.ts";
import type { TokenVendor } from "../../src/core/token-vendor.ts";
import type { Listener } from "../../src/core/watch-hub.ts";

/**
 * A listener read by pulling: keeps only the newest event not yet taken, and
 * the end (taken after that event): an error, or undefined for a clean end.
 */
export class LatestValue<E> implements Listener<E> {
  #pending: E | undefined;
  #ended = false;
  #reason: Error | undefined;
  #wake: (() => void) | undefined;

  next(event: E): void {
    this.#pending = event;
    this.#wake?.();
  }

  end(reason: Error | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#reason = reason;
    this.#wake?.();
  }

  /** The newest event not yet taken; undefined when `signal` aborts first or the end was clean. Throws the end's error. */
  async take(signal: AbortSignal): Promise<E | undefined> {
    while (this.#pending === undefined && !this.#ended) {
      if (signal.aborted) return undefined;
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener("abort", done);
          this.#wake = undefined;
          resolve();
        };
        this.#wake = done;
        signal.addEventListener("abort", done, { once: true });
      });
    }
    const e = this.#pending;
    if (e !== undefined) {
      this.#pending = undefined;
      return e;
    }
    if (this.#reason !== undefined) throw this.#reason;
    return undefined;
  }
}

/** The events of `vendor.watch(target)`; ends when `signal` aborts, throws the end's error. */
export async function* watchStream(
  vendor: TokenVendor,
  target: WatchTarget,
  signal: AbortSignal,
): AsyncGenerator<WatchEvent> {
  const events = new LatestValue<WatchEvent>();
  const cancel = vendor.watch(target, events, signal);
  try {
    for (;;) {
      const ev = await events.take(signal);
      if (ev === undefined) return;
      yield ev;
    }
  } finally {
    cancel();
  }
}
