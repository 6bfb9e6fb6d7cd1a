// The small validators the config is read with: each names the option and
// says what it must be, in a ConfigError.

import { parseHostPort } from "./transport/index.ts";

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export function obj(v: unknown, at: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConfigError(`${at} must be a mapping`);
  }
  return v as Record<string, unknown>;
}

export function known(o: Record<string, unknown>, at: string, keys: readonly string[]) {
  for (const k of Object.keys(o)) {
    if (!keys.includes(k)) {
      throw new ConfigError(`${at}.${k} is not an option; expected one of ${keys.join(", ")}`);
    }
  }
}

export function str(v: unknown, at: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new ConfigError(`${at} must be a string`);
  return v;
}

export function strList(v: unknown, at: string): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === "string") return v.split(/\s+/).filter(Boolean);
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string" && s !== "" && !/\s/.test(s))) {
    throw new ConfigError(`${at} must be a list of non-empty strings without spaces`);
  }
  return v as string[];
}

export function bool(v: unknown, at: string, dflt: boolean): boolean {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "boolean") throw new ConfigError(`${at} must be true or false`);
  return v;
}

export function num(v: unknown, at: string, dflt: number, min: number, max: number): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
    throw new ConfigError(`${at} must be a number from ${min} to ${max}; got ${JSON.stringify(v)}`);
  }
  return v;
}

export function int(v: unknown, at: string, dflt: number, min: number, max: number): number {
  const n = num(v, at, dflt, min, max);
  if (!Number.isInteger(n)) throw new ConfigError(`${at} must be an integer; got ${n}`);
  return n;
}

export function fraction(v: unknown, at: string, dflt: number, zeroOk: boolean): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "number" || !(zeroOk ? v >= 0 : v > 0) || v > 1) {
    throw new ConfigError(
      `${at} must be a number in ${zeroOk ? "[0, 1]" : "(0, 1]"}; got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

const units: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Parses "250ms", "30s", "5m", "1h", "30d" (or combinations like "1m30s") into milliseconds. */
export function parseDuration(text: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * units[m[2] as string]!;
    matched += m[0].length;
  }
  return matched === text.length && text.length > 0 ? Math.round(total) : undefined;
}

export function duration(v: unknown, at: string, dflt: number): number {
  if (v === undefined || v === null) return dflt;
  const ms = typeof v === "string" ? parseDuration(v) : undefined;
  if (ms === undefined) {
    throw new ConfigError(
      `${at} must be a duration such as "500ms", "30s", "5m" or "1h"; got ${JSON.stringify(v)}`,
    );
  }
  return ms;
}

export function url(v: unknown, at: string): string | undefined {
  const s = str(v, at);
  if (s === undefined) return undefined;
  if (!URL.canParse(s) || !/^https?:$/.test(new URL(s).protocol)) {
    throw new ConfigError(`${at} must be an http(s) URL; got "${s}"`);
  }
  return s;
}

export function mongoUri(v: string): string {
  // The message must not echo the URI: it may carry a password.
  if (!/^mongodb(\+srv)?:\/\//.test(v)) {
    throw new ConfigError("MONGODB_URI must start with mongodb:// or mongodb+srv://");
  }
  return v;
}

/** A listen address, checked by the listeners' own parser. */
export function hostPort(v: string, at: string): string {
  try {
    parseHostPort(v, at);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  return v;
}
