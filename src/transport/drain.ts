// The bounded drain every listener runs on shutdown: stop accepting, let the
// calls in flight finish for the grace period, then abort the rest with
// UNAVAILABLE (so clients reconnect to another replica), give them a moment
// to send that status, and close whatever is still open.

import { Code, ConnectError } from "@connectrpc/connect";

export interface DrainSteps {
  /** Stops accepting; resolves once no call is left and the listener is closed. */
  stopAccepting(): Promise<void>;
  /** Closes every connection still open. */
  forceClose(): void | Promise<void>;
}

export interface ListenerDrain {
  /** Aborted with UNAVAILABLE when the grace runs out: every call's signal follows it. */
  readonly shutdownSignal: AbortSignal;
  /** Runs the drain; later calls get the first one's promise. */
  drain(graceMs: number): Promise<void>;
}

// After the grace period, how long aborted calls get to flush their status.
const flushMs = 250;

export function createListenerDrain(steps: DrainSteps): ListenerDrain {
  const shutdown = new AbortController();
  let drained: Promise<void> | undefined;
  return {
    shutdownSignal: shutdown.signal,
    drain(graceMs) {
      drained ??= (async () => {
        const done = steps.stopAccepting();
        if (await within(done, graceMs)) return;
        shutdown.abort(new ConnectError("the server is shutting down", Code.Unavailable));
        if (await within(done, flushMs)) return;
        await steps.forceClose();
      })();
      return drained;
    },
  };
}

/** Resolves true if p settled within ms, false otherwise; leaves no timer behind. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, ms), false);
  });
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
