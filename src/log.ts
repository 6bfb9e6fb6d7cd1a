// JSON logs with every token-bearing field redacted, whatever object it sits in.
// A line written while a span is active carries its trace_id and span_id.

import { isSpanContextValid, trace } from "@opentelemetry/api";
import { pino } from "pino";
import type { LogLevel } from "./config.ts";
import type { Logger } from "./core/logger.ts";

const secretFields = [
  "accessToken",
  "refreshToken",
  "idToken",
  "clientSecret",
  "access_token",
  "refresh_token",
  "id_token",
  "client_secret",
  "token",
  "authorization",
  "password",
];

const redactPaths: readonly string[] = [
  ...secretFields,
  ...secretFields.map((f) => `*.${f}`),
  ...secretFields.map((f) => `*.*.${f}`),
];

export type RootLogger = Logger & { child(bindings: object): RootLogger; level: string };

export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): RootLogger {
  const opts = {
    level,
    base: { service: "tokenvend" },
    redact: { paths: [...redactPaths], censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin: traceFields,
  };
  return (destination === undefined
    ? pino(opts)
    : pino(opts, destination as pino.DestinationStream)) as unknown as RootLogger;
}

/**
 * trace_id, span_id and trace_flags of the active span (none without an SDK).
 * A fresh object every time: pino merges the line's fields into it.
 */
function traceFields(): object {
  const span = trace.getActiveSpan();
  if (span === undefined) return {};
  const c = span.spanContext();
  if (!isSpanContextValid(c)) return {};
  return {
    trace_id: c.traceId,
    span_id: c.spanId,
    trace_flags: `0${c.traceFlags.toString(16)}`.slice(-2),
  };
}
