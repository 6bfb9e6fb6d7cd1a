// A TokenVendor stream read by pulling, for tests that step through it: the
// push listener feeds a latest-value queue, as a slow subscriber sees it.

import type { TokenVendor, WatchEvent, WatchTarget } from "../../src/core/token-vendor.ts";
import { LatestValue } from "../../src/core/watch-hub.ts";

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
