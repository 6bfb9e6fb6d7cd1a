// One Connect interceptor gives every RPC, on both listeners, unary and
// streaming alike, a server span and an `rpc.server.call.duration` sample. The
// span continues the caller's W3C `traceparent` (gRPC metadata and HTTP headers
// are the same Headers here), is named by method, carries the stable rpc.*
// attributes and the gRPC status, and is active for everything the handler
// does: for a stream, every pull of the next message re-enters it, so work
// done while streaming (pushes, refreshes) joins the stream's trace.
// As gRPC's semantic conventions say, only server-side failures (UNKNOWN,
// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) mark the
// span as an error; NOT_FOUND for an unknown session is an answer, not a fault.

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  type Attributes,
  type Context,
  context,
  ProxyTracerProvider,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  type TextMapGetter,
  type TextMapPropagator,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { toWireError } from "../rpc/error-details.ts";
import { type DescribeError, recordError } from "./instrument.ts";
import type { RpcMetrics } from "./metrics.ts";

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

export function createRpcTelemetryInterceptor(opts: RpcTelemetryOptions): Interceptor {
  const { tracer } = opts;
  const duration = opts.metrics.callDuration;
  const extract = (carrier: Headers): Context =>
    opts.propagator !== undefined
      ? opts.propagator.extract(ROOT_CONTEXT, carrier, headerGetter)
      : propagation.extract(ROOT_CONTEXT, carrier, headerGetter);

  // Attribute sets are few (system x method x status): built once, not per call.
  const attrCache = new Map<string, Attributes>();
  const attrsOf = (system: string, method: string, code: number | undefined): Attributes => {
    const key = `${system} ${method} ${code ?? ""}`;
    let a = attrCache.get(key);
    if (a === undefined) {
      const name = code !== undefined ? (grpcStatusNames[code] ?? "UNKNOWN") : undefined;
      a = Object.freeze({
        "rpc.system.name": system,
        "rpc.method": method,
        ...(name !== undefined ? { "rpc.status_code": name } : {}),
        ...(name !== undefined && serverFaults.has(code as Code) ? { "error.type": name } : {}),
      });
      attrCache.set(key, a);
    }
    return a;
  };

  return (next) => async (req) => {
    const startedAt = performance.now();
    const method = `${req.service.typeName}/${req.method.name}`;
    // The gRPC listener's metadata has no content-type: it is gRPC.
    const contentType = req.header.get("content-type") ?? "application/grpc";
    const system = contentType.startsWith("application/grpc") ? "grpc" : "connectrpc";
    const parent = tracer !== undefined ? extract(req.header) : ROOT_CONTEXT;
    const span = (tracer ?? noopTracer).startSpan(
      method,
      { kind: SpanKind.SERVER, attributes: attrsOf(system, method, undefined) },
      parent,
    );
    const active = trace.setSpan(parent, span);
    let ended = false;
    const end = (err: unknown) => {
      if (ended) return;
      ended = true;
      let code = Code.Canceled as number;
      if (err === undefined) {
        code = 0;
        span.setAttributes(okSpanAttrs);
      } else {
        const wire =
          err === cancelled ? cancelledError : toWireError(err, method, req.signal, undefined);
        code = wire.code;
        recordError(span, wire, describeWireError);
      }
      span.end();
      duration.record((performance.now() - startedAt) / 1000, attrsOf(system, method, code));
    };

    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await context.with(active, next, undefined, req);
    } catch (err) {
      end(err);
      throw err;
    }
    if (!res.stream) {
      end(undefined);
      return res;
    }
    return { ...res, message: traced(res.message, active, end, req.signal) };
  };
}

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
