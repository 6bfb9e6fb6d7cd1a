// One Connect interceptor gives every RPC, on both listeners, unary and
// streaming alike, a server span and an `rpc.server.call.duration` sample. The
// span continues the caller's W3C `traceparent` (gRPC metadata and HTTP headers
// are the same Headers here), is named by method, carries the stable rpc.*
// attributes and the gRPC status, and is active for everything the handler
// does: for a stream, every pull of the next message re-enters it, so work
// done while streaming (pushes, refreshes) joins the stream's trace. Push
// streams on the gRPC listener, which no interceptor sees, get the same span
// and sample from its push-stream observer instead.
// As gRPC's semantic conventions say, only server-side failures (UNKNOWN,
// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) mark the
// span as an error; NOT_FOUND for an unknown session is an answer, not a fault.

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  type Attributes,
  type Context,
  context,
  type Histogram,
  ProxyTracerProvider,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  type TextMapGetter,
  type TextMapPropagator,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { type DescribeError, recordError } from "../telemetry/instrument.ts";
import type { RpcMetrics } from "../telemetry/metrics.ts";
import type { PushStreamObservation, PushStreamObserver } from "../transport/index.ts";

export interface RpcTelemetryOptions {
  /** Without one, only the metric is recorded (a Prometheus endpoint and no OTEL_*). */
  readonly tracer?: Tracer | undefined;
  readonly metrics: RpcMetrics;
  /** Defaults to the global propagator (W3C trace context and baggage under the SDK). */
  readonly propagator?: TextMapPropagator;
}

/** gRPC status names by code, as `rpc.status_code` and `error.type` carry them. */
export const grpcStatusNames: readonly string[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

const serverFaults: ReadonlySet<Code> = new Set([
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
]);

const okSpanAttrs: Attributes = Object.freeze({
  "rpc.status_code": "OK",
  "rpc.grpc.status_code": 0,
});

const noopTracer = new ProxyTracerProvider().getTracer("noop");

const headerGetter: TextMapGetter<Headers> = {
  get: (h, key) => h.get(key) ?? undefined,
  keys: (h) => [...h.keys()],
};

/** The wire error's code and message: what the caller gets, so safe to record. */
const describeWireError: DescribeError = (err) => {
  const e = err as ConnectError;
  const name = grpcStatusNames[e.code] ?? "UNKNOWN";
  return {
    type: name,
    message: e.rawMessage,
    expected: !serverFaults.has(e.code),
    attributes: { "rpc.status_code": name, "rpc.grpc.status_code": e.code },
  };
};

/** Telemetry for RPCs: the interceptor, and its stand-in for push streams. */
export interface RpcTelemetry {
  readonly interceptor: Interceptor;
  /**
   * The same span and sample for a push stream on the gRPC listener, which
   * the interceptor does not see: give it next to the interceptor there.
   */
  readonly pushStreamObserver: PushStreamObserver;
}

export function createRpcTelemetry(opts: RpcTelemetryOptions): RpcTelemetry {
  const rpc = new RpcSpans(opts);
  return {
    interceptor: (next) => async (req) => {
      const call = rpc.start(req.service.typeName, req.method.name, req.header);
      const end = (err: unknown) =>
        call.end(err === undefined ? undefined : err === cancelled ? cancelledError : wireOf(err));
      let res: Awaited<ReturnType<typeof next>>;
      try {
        res = await context.with(call.active, next, undefined, req);
      } catch (err) {
        end(err);
        throw err;
      }
      if (!res.stream) {
        end(undefined);
        return res;
      }
      return { ...res, message: traced(res.message, call.active, end, req.signal) };
    },
    pushStreamObserver: (ctx) =>
      rpc.start(ctx.service.typeName, ctx.method.name, ctx.requestHeader),
  };
}

/** What every RPC's span and sample share: tracer, histogram, propagation, attribute sets. */
class RpcSpans {
  readonly tracer: Tracer | undefined;
  readonly duration: Histogram;
  readonly #propagator: TextMapPropagator | undefined;
  // Attribute sets are few (system x method x status): built once, not per call.
  readonly #attrs = new Map<string, Attributes>();

  constructor(opts: RpcTelemetryOptions) {
    this.tracer = opts.tracer;
    this.duration = opts.metrics.callDuration;
    this.#propagator = opts.propagator;
  }

  /** Starts one RPC's server span, continuing the caller's trace. */
  start(service: string, methodName: string, header: Headers): RpcCall {
    return new RpcCall(this, `${service}/${methodName}`, header);
  }

  /**
   * The caller's trace context. Its baggage is dropped: it would otherwise be
   * forwarded to providers with their token requests. (With authentication on,
   * only authenticated calls get this far.)
   */
  extract(carrier: Headers): Context {
    const ctx =
      this.#propagator !== undefined
        ? this.#propagator.extract(ROOT_CONTEXT, carrier, headerGetter)
        : propagation.extract(ROOT_CONTEXT, carrier, headerGetter);
    return propagation.getBaggage(ctx) !== undefined ? propagation.deleteBaggage(ctx) : ctx;
  }

  attrsOf(system: string, method: string, code: number | undefined): Attributes {
    const key = `${system} ${method} ${code ?? ""}`;
    let a = this.#attrs.get(key);
    if (a === undefined) {
      const name = code !== undefined ? (grpcStatusNames[code] ?? "UNKNOWN") : undefined;
      a = Object.freeze({
        "rpc.system.name": system,
        "rpc.method": method,
        ...(name !== undefined ? { "rpc.status_code": name } : {}),
        ...(name !== undefined && serverFaults.has(code as Code) ? { "error.type": name } : {}),
      });
      this.#attrs.set(key, a);
    }
    return a;
  }
}

/** One RPC's server span, active for its work, ended once with its wire status. */
class RpcCall implements PushStreamObservation {
  readonly method: string;
  readonly active: Context;
  readonly #rpc: RpcSpans;
  readonly #system: string;
  readonly #span: Span;
  readonly #startedAt = performance.now();
  #ended = false;

  constructor(rpc: RpcSpans, method: string, header: Headers) {
    this.#rpc = rpc;
    this.method = method;
    // The gRPC listener's metadata has no content-type: it is gRPC.
    const contentType = header.get("content-type") ?? "application/grpc";
    this.#system = contentType.startsWith("application/grpc") ? "grpc" : "connectrpc";
    const parent = rpc.tracer !== undefined ? rpc.extract(header) : ROOT_CONTEXT;
    this.#span = (rpc.tracer ?? noopTracer).startSpan(
      method,
      { kind: SpanKind.SERVER, attributes: rpc.attrsOf(this.#system, method, undefined) },
      parent,
    );
    this.active = trace.setSpan(parent, this.#span);
  }

  run<T>(fn: () => T): T {
    return context.with(this.active, fn);
  }

  end(wire: ConnectError | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    if (wire === undefined) this.#span.setAttributes(okSpanAttrs);
    else recordError(this.#span, wire, describeWireError);
    this.#span.end();
    this.#rpc.duration.record(
      (performance.now() - this.#startedAt) / 1000,
      this.#rpc.attrsOf(this.#system, this.method, wire?.code ?? 0),
    );
  }
}

/**
 * The status of an error seen here. Handlers' errors arrive as the listener
 * maps them for the wire (a ConnectError); anything else is an inner
 * interceptor's own failure, which the listener answers INTERNAL.
 */
const wireOf = (err: unknown): ConnectError => (err instanceof ConnectError ? err : internal);
const internal = new ConnectError("internal error", Code.Internal);

/** Ends a stream that its caller stopped pulling (cancel, deadline, shutdown). */
const cancelled = Symbol("cancelled");
const cancelledError = new ConnectError("the stream was closed", Code.Canceled);

/**
 * The stream's messages, each pull run in the stream's context; the span ends
 * with the stream: done (OK, or the abort's reason when the handler returned
 * because its signal aborted), an error, or an early return.
 */
function traced<T>(
  source: AsyncIterable<T>,
  active: Context,
  end: (err: unknown) => void,
  signal: AbortSignal,
): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const it = source[Symbol.asyncIterator]();
      const settle = (r: IteratorResult<T>) => {
        if (r.done === true) {
          end(signal.aborted && signal.reason instanceof ConnectError ? signal.reason : undefined);
        }
        return r;
      };
      const fail = (err: unknown): never => {
        end(err);
        throw err;
      };
      return {
        next: () => context.with(active, () => it.next()).then(settle, fail),
        return: (value?: unknown) => {
          const reason = signal.aborted ? signal.reason : cancelled;
          end(reason instanceof ConnectError ? reason : cancelled);
          return it.return !== undefined
            ? context.with(active, () => it.return!(value))
            : Promise.resolve({ done: true as const, value: value as T });
        },
        throw: (err?: unknown) => {
          end(err);
          return it.throw !== undefined
            ? context.with(active, () => it.throw!(err))
            : Promise.reject(err);
        },
      };
    },
  };
}
