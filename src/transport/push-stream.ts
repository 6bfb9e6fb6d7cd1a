// A server-streaming handler may come in a second, push form beside its async
// generator: it gets a sink and calls send() per message. The gRPC listener
// uses it when no interceptor needs the iterable form (or an observer does for
// push streams what the interceptors do for streams), so a stream costs one
// small object and a message one call, instead of a chain of async generators
// and a few promises per message (what 10,000 WatchToken streams pay for).
// Push streams deliver the latest value: a message not yet written when a
// newer one comes is replaced by it.

import type { ConnectError, HandlerContext } from "@connectrpc/connect";

export interface StreamSink<O> {
  /** Sends `message`; one still waiting to be written is replaced by it. */
  send(message: O): void;
  /**
   * Ends the stream, cleanly or with `error` (any error: the listener maps it
   * for the wire), after what was sent; later calls do nothing.
   */
  end(error?: unknown): void;
}

export type PushStreamImpl<I, O> = (request: I, ctx: HandlerContext, sink: StreamSink<O>) => void;

/** What an observer does for one push stream (telemetry: its span and duration). */
export interface PushStreamObservation {
  /** Runs the handler's push call: what it starts (subscriptions) runs in this context. */
  run<T>(fn: () => T): T;
  /** Called once with the final status: undefined for OK, else the wire error (CANCELLED too). */
  end(error: ConnectError | undefined): void;
}

/**
 * Watches push streams the way interceptors watch a stream's iterable: the
 * gRPC listener keeps the push form under interceptors only when given one.
 */
export type PushStreamObserver = (ctx: HandlerContext) => PushStreamObservation;

const pushKey = Symbol("tokenvend.pushStream");

/** `stream` (the async generator form), carrying its push form too. */
export function withPushStream<F extends object, I, O>(stream: F, push: PushStreamImpl<I, O>): F {
  return Object.assign(stream, { [pushKey]: push });
}

/** The push form of a streaming handler, if it has one. */
export function pushStreamOf(handler: unknown): PushStreamImpl<unknown, unknown> | undefined {
  if (typeof handler !== "function") return undefined;
  return (handler as { [pushKey]?: PushStreamImpl<unknown, unknown> })[pushKey];
}
