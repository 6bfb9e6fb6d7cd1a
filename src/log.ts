// JSON logs with every token-bearing field redacted, whatever object it sits in.

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

export const redactPaths: readonly string[] = [
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
  };
  return (destination === undefined
    ? pino(opts)
    : pino(opts, destination as pino.DestinationStream)) as unknown as RootLogger;
}
