// The one helper that wraps work in a span. It imports only @opentelemetry/api,
// so the core can use it and stays free of the SDK: without an SDK every call
// here is a no-op. Expected outcomes (NOT_FOUND for an unknown session, a
// caller's bad input) end the span without the error status; only failures of
// the service itself are marked as errors. No error message reaches a span
// unless the describer says it is safe: messages of unknown errors may hold
// secrets, so they are left out.

import {
  type Attributes,
  type Context,
  context,
  type Link,
  type Span,
  type SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";

/** What a span may say about an error. */
export interface ErrorDescription {
  /** A short, stable, low-cardinality name: an error code, never a message. */
  readonly type: string;
  /** A message known to be free of secrets (domain and wire messages are). */
  readonly message?: string | undefined;
  /** An outcome the caller expects: recorded in attributes, not as an error. */
  readonly expected: boolean;
  readonly attributes?: Attributes;
}

export type DescribeError = (err: unknown) => ErrorDescription;

export interface InstrumentOptions {
  readonly kind?: SpanKind;
  readonly attributes?: Attributes;
  readonly links?: Link[];
  /** Starts a trace of its own instead of continuing the active one. */
  readonly root?: boolean;
  /** The parent; the active context by default. */
  readonly parent?: Context;
  readonly describeError?: DescribeError;
}

/**
 * Runs `fn` in a new span, active for everything `fn` starts (child spans,
 * log lines), and ends the span when `fn` settles.
 */
export async function instrument<T>(
  tracer: Tracer,
  name: string,
  opts: InstrumentOptions,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = opts.parent ?? context.active();
  const span = tracer.startSpan(
    name,
    {
      ...(opts.kind !== undefined ? { kind: opts.kind } : {}),
      ...(opts.attributes !== undefined ? { attributes: opts.attributes } : {}),
      ...(opts.links !== undefined ? { links: opts.links } : {}),
      ...(opts.root === true ? { root: true } : {}),
    },
    parent,
  );
  try {
    return await context.with(trace.setSpan(parent, span), fn, undefined, span);
  } catch (err) {
    recordError(span, err, opts.describeError ?? describeUnknown);
    throw err;
  } finally {
    span.end();
  }
}

/**
 * Puts an error on a span: its attributes always; the error status, `error.type`
 * and an `exception` event (type and safe message, no stack) only when it is
 * not an expected outcome.
 */
export function recordError(
  span: Span,
  err: unknown,
  describe: DescribeError = describeUnknown,
): ErrorDescription {
  const d = describe(err);
  if (d.attributes !== undefined) span.setAttributes(d.attributes);
  if (!d.expected) {
    span.setAttribute("error.type", d.type);
    span.setStatus({
      code: SpanStatusCode.ERROR,
      ...(d.message !== undefined ? { message: d.message } : {}),
    });
    span.addEvent("exception", {
      "exception.type": d.type,
      ...(d.message !== undefined ? { "exception.message": d.message } : {}),
    });
  }
  return d;
}

/** An error nothing is known about: its class name only, and it is a failure. */
const describeUnknown: DescribeError = (err) => ({
  type: err instanceof Error ? err.name : typeof err,
  expected: false,
});
