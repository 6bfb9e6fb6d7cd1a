// Server streams are written once, in push form: the handler gets a sink and
// calls send() per message, end() once. On the gRPC listener a stream then
// costs one small object and a message one call, instead of a chain of async
// generators and a few promises per message (what 10,000 WatchToken streams
// pay for); connect-node gets the same handler as an async generator
// (push-iterable.ts). Push streams deliver the latest value: a message not
// yet written when a newer one comes is replaced by it.

import type { ConnectError, HandlerContext } from "@connectrpc/connect";
import { iterableOf } from "./push-iterable.ts";

export interface StreamSink<O> {
  /** Sends `message` (a whole message, not an init shape); one still waiting is replaced by it. */
  send(message: O): void;
  /**
   * Ends the stream, cleanly or with `error` (any error: the listener maps it
   * for the wire), after what was sent; later calls do nothing.
   */
  end(error?: unknown): void;
}

/**
 * A server stream in push form. It ends when it calls sink.end(), or when the
 * call's signal aborts (what it started must stop then); a synchronous throw
 * ends the stream with that error.
 */
export type PushStreamImpl<I, O> = (request: I, ctx: HandlerContext, sink: StreamSink<O>) => void;

/** What an observer does for one push stream (telemetry: its span and duration). */
export interface PushStreamObservation {
  /** Runs the handler's push call: what it starts (subscriptions) runs in this context. */
  run<T>(fn: () => T): T;
  /** Called once with the final status: undefined for OK, else the wire error (CANCELLED too). */
  end(error: ConnectError | undefined): void;
}

/**
 * Does for push streams on the gRPC listener what interceptors do for a
 * stream's iterable, which the push path does not build.
 */
export type PushStreamObserver = (ctx: HandlerContext) => PushStreamObservation;

const pushKey = Symbol("transport.pushStream");

/**
 * A server-streaming method of a ServiceImpl, written in push form: the async
 * generator connect-node takes, carrying the push form the gRPC listener takes.
 */
export function pushStream<I, O>(
  push: PushStreamImpl<I, O>,
): (request: I, ctx: HandlerContext) => AsyncGenerator<O> {
  return Object.assign(iterableOf(push), { [pushKey]: push });
}

/** The push form of a streaming method, if it was written with pushStream(). */
export function pushStreamOf(handler: unknown): PushStreamImpl<unknown, unknown> | undefined {
  if (typeof handler !== "function") return undefined;
  return (handler as { [pushKey]?: PushStreamImpl<unknown, unknown> })[pushKey];
}
