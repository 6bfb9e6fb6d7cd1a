// WatchToken streams, by push: each stream is a listener of its key in the
// watch hub that holds renewals back until its first message (the current
// token) went out, drops generations it already has, and releases its slot
// once, whichever way it ends. At most maxStreams are open on a replica.

import { type Context, context, type SpanContext, SpanKind, type Tracer } from "@opentelemetry/api";
import { attr } from "../telemetry/metrics.ts";
import { notOwnerError, TokenVendError } from "./errors.ts";
import type { LiveRecord } from "./token.ts";
import type { Listener, WatchHub } from "./watch-hub.ts";

/** Why a stream got a message: its first, a renewal, or a new login stored. */
export type WatchReason = "initial" | "refreshed" | "stored";

export interface WatchEvent {
  readonly record: LiveRecord;
  readonly reason: WatchReason;
  /** The span of the work that produced it (a renewal, a store call), when traced. */
  readonly cause?: SpanContext | undefined;
}

export interface Binding {
  readonly expectedSubject?: string | undefined;
  readonly expectedClientId?: string | undefined;
  /** The caller's owner: a record owned by anyone else is refused (NOT_OWNER). Unset: any owner. */
  readonly owner?: string | undefined;
  /** A session read (all its providers): those the caller may reach; the others are not read. */
  readonly providers?: ((provider: string) => boolean) | undefined;
}

/** Why `record` may not go to a caller with this binding, or undefined. */
export function accessError(record: LiveRecord, b: Binding): TokenVendError | undefined {
  const t = record.tokens;
  if (b.owner !== undefined && b.owner !== t.owner) return notOwnerError();
  if (
    (b.expectedSubject && b.expectedSubject !== t.subject) ||
    (b.expectedClientId && b.expectedClientId !== t.clientId)
  ) {
    return new TokenVendError(
      "INVALID_BINDING",
      "the stored token is bound to a different subject or client",
    );
  }
  return undefined;
}

export type WatchTarget =
  | ({ readonly kind: "session"; readonly sessionId: string; readonly provider: string } & Binding)
  | { readonly kind: "grant"; readonly grant: string };

/** How a generation read from the store is announced to streams. */
export function reasonOf(record: LiveRecord): WatchReason {
  return record.reason === "stored" ? "stored" : "refreshed";
}

export interface Streams {
  /**
   * Opens a stream of key `id`: listens first (so a renewal in between is not
   * missed), then sends what `first` resolves to. Every message is checked
   * first: a generation `check` refuses ends the stream with that error.
   * Returns its cancel.
   */
  open(
    id: string,
    provider: string,
    listener: Listener<WatchEvent>,
    signal: AbortSignal,
    first: () => Promise<LiveRecord>,
    check?: (record: LiveRecord) => Error | undefined,
  ): () => void;
  readonly count: number;
}

export function createStreams(opts: {
  readonly hub: WatchHub<WatchEvent>;
  readonly maxStreams: number;
  readonly tracer: Tracer | undefined;
}): Streams {
  let count = 0;
  return {
    open(id, provider, listener, signal, first, check) {
      if (count >= opts.maxStreams) {
        listener.end(
          new TokenVendError(
            "RESOURCE_EXHAUSTED",
            `this replica serves at most ${opts.maxStreams} streams`,
          ),
        );
        return noop;
      }
      if (signal.aborted) {
        listener.end(undefined);
        return noop;
      }
      count++;
      const stream = new TokenStream(listener, signal, provider, opts.tracer, () => count--, check);
      stream.off = opts.hub.listen(id, stream);
      first().then(
        (record) => stream.start(record),
        (err: unknown) => stream.finish(err as Error),
      );
      return () => stream.finish(undefined);
    },
    get count() {
      return count;
    },
  };
}

const noop = () => {};

class TokenStream implements Listener<WatchEvent> {
  done = false;
  off: (() => void) | undefined;
  #started = false;
  #last = 0;
  #early: WatchEvent | undefined;
  /** An end that came before the first message: that message goes out first. */
  #endAfterStart: Error | undefined;
  readonly #listener: Listener<WatchEvent>;
  readonly #signal: AbortSignal;
  readonly #provider: string;
  readonly #tracer: Tracer | undefined;
  /** The stream's own context (its server span), the parent of its push spans. */
  readonly #context: Context | undefined;
  readonly #release: () => void;
  readonly #check: ((record: LiveRecord) => Error | undefined) | undefined;

  constructor(
    listener: Listener<WatchEvent>,
    signal: AbortSignal,
    provider: string,
    tracer: Tracer | undefined,
    release: () => void,
    check: ((record: LiveRecord) => Error | undefined) | undefined,
  ) {
    this.#check = check;
    this.#listener = listener;
    this.#signal = signal;
    this.#provider = provider;
    this.#tracer = tracer;
    this.#context = tracer !== undefined ? context.active() : undefined;
    this.#release = release;
    signal.addEventListener("abort", this);
  }

  /** The first message: the current token. */
  start(first: LiveRecord): void {
    if (this.done) return;
    this.#started = true;
    const refused = this.#check?.(first);
    if (refused !== undefined) {
      this.finish(refused);
      return;
    }
    this.#last = first.generation;
    this.#listener.next({ record: first, reason: "initial" });
    const early = this.#early;
    this.#early = undefined;
    if (early !== undefined) this.next(early);
    if (this.#endAfterStart !== undefined) this.finish(this.#endAfterStart);
  }

  next(ev: WatchEvent): void {
    if (this.done) return;
    if (!this.#started) {
      this.#early = ev;
      return;
    }
    if (ev.record.generation <= this.#last) return;
    const refused = this.#check?.(ev.record);
    if (refused !== undefined) {
      this.finish(refused);
      return;
    }
    this.#last = ev.record.generation;
    if (this.#tracer !== undefined) this.#tracePush(this.#tracer, ev);
    this.#listener.next(ev);
  }

  /** The hub ended the key (revoked, no longer renewable, shutting down). */
  end(reason: Error | undefined): void {
    if (this.#started) this.finish(reason);
    else this.#endAfterStart ??= reason;
  }

  /** The caller's signal aborted. */
  handleEvent(): void {
    this.finish(undefined);
  }

  finish(error: Error | undefined): void {
    if (this.done) return;
    this.done = true;
    this.#signal.removeEventListener("abort", this);
    this.off?.();
    this.#release();
    this.#listener.end(error);
  }

  /** A span in the stream's context, linked to the renewal that caused the push. */
  #tracePush(tracer: Tracer, ev: WatchEvent): void {
    tracer
      .startSpan(
        "tokenvend.push",
        {
          kind: SpanKind.INTERNAL,
          attributes: {
            [attr.provider]: this.#provider,
            [attr.generation]: ev.record.generation,
            [attr.watchReason]: ev.reason,
          },
          ...(ev.cause !== undefined ? { links: [{ context: ev.cause }] } : {}),
        },
        this.#context,
      )
      .end();
  }
}
