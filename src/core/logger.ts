// The logging port: pino satisfies it; the default does nothing.

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const noop = () => {};
export const noopLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };
