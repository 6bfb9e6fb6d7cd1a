// connect-node reads a server stream by pulling an async iterable; handlers
// are written once, in push form. This turns one into the other, with the
// push form's latest-value semantics: a message not yet taken when a newer one
// comes is replaced by it, so a slow reader holds one message, not a backlog.
// The stream ends after the last message taken, with the error given to end()
// or cleanly; when the call's signal aborts first (cancel, deadline, shutdown),
// it ends at once with the abort's reason, and nothing is left waiting.

import type { HandlerContext } from "@connectrpc/connect";
import type { PushStreamImpl, StreamSink } from "./push-stream.ts";

/** The async generator form of a push-form handler. */
export function iterableOf<I, O>(
  push: PushStreamImpl<I, O>,
): (request: I, ctx: HandlerContext) => AsyncGenerator<O> {
  return async function* pushed(request, ctx) {
    const slot = new LatestSlot<O>();
    try {
      push(request, ctx, slot);
      for (;;) {
        const next = await slot.take(ctx.signal);
        if (next === ended) return;
        yield next;
      }
    } finally {
      slot.close();
    }
  };
}

const ended = Symbol("ended");

/** The newest message not yet taken, then the end. */
class LatestSlot<O> implements StreamSink<O> {
  #message: O | undefined;
  #has = false;
  #end: { error: unknown } | undefined;
  #closed = false;
  #wake: (() => void) | undefined;

  send(message: O): void {
    if (this.#end !== undefined || this.#closed) return;
    this.#message = message;
    this.#has = true;
    this.#wake?.();
  }

  end(error?: unknown): void {
    if (this.#end !== undefined || this.#closed) return;
    this.#end = { error };
    this.#wake?.();
  }

  /** The reader is gone: later sends are dropped. */
  close(): void {
    this.#closed = true;
    this.#has = false;
    this.#message = undefined;
  }

  /** The next message, or `ended`; throws the end's error, or the signal's reason on abort. */
  async take(signal: AbortSignal): Promise<O | typeof ended> {
    for (;;) {
      if (signal.aborted) throw signal.reason;
      if (this.#has) {
        const message = this.#message as O;
        this.#has = false;
        this.#message = undefined;
        return message;
      }
      if (this.#end !== undefined) {
        if (this.#end.error !== undefined) throw this.#end.error;
        return ended;
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal.removeEventListener("abort", wake);
          this.#wake = undefined;
          resolve();
        };
        this.#wake = wake;
        signal.addEventListener("abort", wake);
      });
    }
  }
}
