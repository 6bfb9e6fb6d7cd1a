// What a request's fields may hold. Bad input gets INVALID_ARGUMENT with one field violation
// per problem, before anything reaches the core; a description never repeats the value.
//
// Bytes first: the listeners refuse a body that is not the request message (INVALID_ARGUMENT
// "cannot decode …"), and protobuf's decoder refuses a string field that is not UTF-8; the JSON
// decoder puts U+FFFD where bytes were not UTF-8, which every rule below refuses.
//
// The rules, per kind of field:
//
// - session id: 1–256 printable ASCII characters (0x21–0x7E). It is a key, often a cookie's
//   value; anything else is a mistake or an attack on the logs and the store's indexes.
// - provider and grant names: what config.ts allows, 1–64 of letters, digits, `.`, `_`, `-`.
// - token material (tokens, state, code, audience): 1–16,384 printable ASCII characters, as
//   every OAuth token is (RFC 6749 §A.12 and §A.13: VSCHAR; JWTs are base64url).
// - scopes: at most 100, each 1–256 of RFC 6749's NQCHAR (printable ASCII but `"` and `\`).
// - token type: RFC 6749 §11.1's type-name, 1–32 of letters, digits, `-`, `.`, `_`.
// - URLs (redirect, callback): absolute http(s), at most 4,096 printable ASCII characters: a
//   URL on the wire is ASCII, and an IRI is the caller's to percent-encode.
// - subject, client id (and the expected ones), login hint, prompt: Unicode text, because some
//   identity providers' subjects are user names. tokenvend compares a binding code point by
//   code point (OIDC compares `sub` exactly) and never rewrites one, so what would make two
//   values look alike in a log, an audit record or a dashboard, or make one value look like
//   another, is refused rather than repaired:
//     · control characters (C0, DEL, C1) and line or paragraph separators: log injection;
//     · format and other invisible characters (Default_Ignorable_Code_Point: bidi embeddings,
//       overrides and isolates, zero-width spaces and joiners, BOM, soft hyphen, tag
//       characters, variation selectors, Hangul fillers): "Trojan Source" (CVE-2021-42574)
//       and look-alike spoofing;
//     · white space other than U+0020, and a space at either end: "alice" and " alice";
//     · U+FFFD, noncharacters and lone surrogates: what broken decoding leaves behind;
//     · text not in Unicode Normalization Form C: "é" as one code point and as "e" + U+0301
//       look the same and would not match; a caller normalizes first (`normalize("NFC")`).
//   Lengths count UTF-16 code units (what every client's string length says).
// - timestamps (expires_at): seconds and nanos within google.protobuf.Timestamp's range
//   (years 1–9999, nanos 0–999,999,999), after 1970 and at most a year ahead.

import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { type FieldViolation, invalidArgument } from "../core/errors.ts";
import {
  isScope,
  printableRe as printable,
  scopeRule,
  tokenProblem,
  tokenShape,
  typeNameProblem,
} from "../core/token-shape.ts";

export const limits = {
  ...tokenShape,
  idMaxChars: 256,
  nameMaxChars: 64,
  bindingMaxChars: 256,
  maxMinValiditySec: 7 * 24 * 3600,
  urlMaxChars: 4096,
} as const;

const nameRe = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** Plain text that needs no further look: printable ASCII and the space. */
const plainAscii = /^[\x20-\x7e]*$/;
/** Refused anywhere in Unicode text (see the file header). */
const refusedInText =
  /[\p{Cc}\p{Cs}\p{Default_Ignorable_Code_Point}\p{Noncharacter_Code_Point}\uFFFD]|(?! )\p{White_Space}/u;
/** google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z. */
const timestampMinSec = -62_135_596_800n;
const timestampMaxSec = 253_402_300_799n;

/** Why `v` is not acceptable Unicode text, or undefined. */
export function textProblem(v: string): string | undefined {
  if (!plainAscii.test(v)) {
    if (refusedInText.test(v)) {
      return "must not contain control, invisible, replacement or non-space white-space characters";
    }
    if (v.normalize("NFC") !== v) return "must be in Unicode normalization form NFC";
  }
  if (v.startsWith(" ") || v.endsWith(" ")) return "must not start or end with a space";
  return undefined;
}

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
  token(field: string, v: string, required: boolean, max: number = limits.tokenMaxChars): this {
    if (v === "") return required ? this.add(field, "required") : this;
    const problem = tokenProblem(v, max);
    return problem === undefined ? this : this.add(field, problem);
  }

  /** An absolute http(s) URL of at most urlMaxChars printable ASCII characters. */
  url(field: string, v: string, required: boolean): this {
    if (v === "") return required ? this.add(field, "required") : this;
    if (v.length > limits.urlMaxChars)
      return this.add(field, `longer than ${limits.urlMaxChars} characters`);
    if (!printable.test(v))
      return this.add(field, "must be printable ASCII (percent-encode the rest)");
    const u = URL.parse(v);
    if (u === null || !/^https?:$/.test(u.protocol)) {
      return this.add(field, "must be an absolute http(s) URL");
    }
    return this;
  }

  /** Unicode text (bindings, hints) of at most `max` UTF-16 code units, by the header's rules. */
  text(field: string, v: string, max: number): this {
    if (v === "") return this;
    if (v.length > max) return this.add(field, `longer than ${max} characters`);
    const problem = textProblem(v);
    return problem === undefined ? this : this.add(field, problem);
  }

  /** An OAuth token type name (RFC 6749 §11.1); empty is allowed (the default applies). */
  typeName(field: string, v: string): this {
    const problem = typeNameProblem(v);
    return problem === undefined ? this : this.add(field, problem);
  }

  scopes(field: string, v: readonly string[]): this {
    if (v.length > limits.scopesMax) return this.add(field, `more than ${limits.scopesMax} scopes`);
    v.forEach((s, i) => {
      if (!isScope(s)) this.add(`${field}[${i}]`, scopeRule);
    });
    return this;
  }

  minValidity(field: string, v: number): this {
    if (v > limits.maxMinValiditySec)
      return this.add(field, `at most ${limits.maxMinValiditySec} seconds`);
    return this;
  }

  /**
   * An instant after 1970 and at most `maxAheadMs` after `nowMs`, as epoch ms (rounded up to
   * the millisecond); NaN after adding a violation.
   */
  instant(field: string, ts: Timestamp, nowMs: number, maxAheadMs: number): number {
    if (ts.seconds < timestampMinSec || ts.seconds > timestampMaxSec) {
      this.add(field, "seconds out of google.protobuf.Timestamp's range (years 1 to 9999)");
      return Number.NaN;
    }
    if (!Number.isInteger(ts.nanos) || ts.nanos < 0 || ts.nanos > 999_999_999) {
      this.add(field, "nanos must be 0 to 999,999,999");
      return Number.NaN;
    }
    const ms = Number(ts.seconds) * 1000 + Math.ceil(ts.nanos / 1_000_000);
    if (ms <= 0 || ms > nowMs + maxAheadMs) {
      this.add(field, "must be a time after 1970 and within a year from now");
      return Number.NaN;
    }
    return ms;
  }

  /** Throws INVALID_ARGUMENT when anything was added. */
  check(): void {
    if (this.list.length > 0) throw invalidArgument(this.list);
  }
}
