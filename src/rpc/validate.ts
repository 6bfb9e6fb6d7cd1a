// Request limits. Bad input gets INVALID_ARGUMENT with one field violation per
// problem, before anything reaches the core.

import { type FieldViolation, invalidArgument } from "../core/errors.ts";

export const limits = {
  idMaxChars: 256,
  nameMaxChars: 64,
  tokenMaxChars: 16_384,
  scopesMax: 100,
  scopeMaxChars: 256,
  bindingMaxChars: 256,
  tokenTypeMaxChars: 32,
  maxLifetimeSec: 366 * 24 * 3600,
  maxMinValiditySec: 7 * 24 * 3600,
  urlMaxChars: 4096,
} as const;

const printable = /^[\x21-\x7e]+$/;
const nameRe = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
// Control characters (C0 and DEL) are refused in free text.
const hasControl = (v: string) =>
  [...v].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);

export class Violations {
  readonly list: FieldViolation[] = [];

  add(field: string, description: string): this {
    this.list.push({ field, description });
    return this;
  }

  /** A session id: 1–256 printable ASCII characters. */
  sessionId(field: string, v: string): this {
    if (v === "") return this.add(field, "required");
    if (v.length > limits.idMaxChars)
      return this.add(field, `longer than ${limits.idMaxChars} characters`);
    if (!printable.test(v)) return this.add(field, "must be printable ASCII without spaces");
    return this;
  }

  /** A configured name (provider or grant). */
  name(field: string, v: string): this {
    if (v === "") return this.add(field, "required");
    if (v.length > limits.nameMaxChars)
      return this.add(field, `longer than ${limits.nameMaxChars} characters`);
    if (!nameRe.test(v)) return this.add(field, "must be letters, digits, '.', '_' or '-'");
    return this;
  }

  /** Token material: checked for size and shape only, never echoed. */
  token(field: string, v: string, required: boolean): this {
    if (v === "") return required ? this.add(field, "required") : this;
    if (v.length > limits.tokenMaxChars)
      return this.add(field, `longer than ${limits.tokenMaxChars} characters`);
    if (!printable.test(v)) return this.add(field, "must be printable ASCII without spaces");
    return this;
  }

  /** An absolute http(s) URL of at most urlMaxChars. */
  url(field: string, v: string, required: boolean): this {
    if (v === "") return required ? this.add(field, "required") : this;
    if (v.length > limits.urlMaxChars)
      return this.add(field, `longer than ${limits.urlMaxChars} characters`);
    const u = URL.parse(v);
    if (u === null || !/^https?:$/.test(u.protocol)) {
      return this.add(field, "must be an absolute http(s) URL");
    }
    return this;
  }

  text(field: string, v: string, max: number): this {
    if (v.length > max) return this.add(field, `longer than ${max} characters`);
    if (hasControl(v)) return this.add(field, "must not contain control characters");
    return this;
  }

  scopes(field: string, v: readonly string[]): this {
    if (v.length > limits.scopesMax) return this.add(field, `more than ${limits.scopesMax} scopes`);
    v.forEach((s, i) => {
      if (s === "" || s.length > limits.scopeMaxChars || !printable.test(s)) {
        this.add(
          `${field}[${i}]`,
          `must be 1–${limits.scopeMaxChars} printable ASCII characters without spaces`,
        );
      }
    });
    return this;
  }

  minValidity(field: string, v: number): this {
    if (v > limits.maxMinValiditySec)
      return this.add(field, `at most ${limits.maxMinValiditySec} seconds`);
    return this;
  }

  /** Throws INVALID_ARGUMENT when anything was added. */
  check(): void {
    if (this.list.length > 0) throw invalidArgument(this.list);
  }
}
