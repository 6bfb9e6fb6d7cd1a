// The shape of every token tokenvend keeps, wherever it comes from: a caller's
// StoreUpstreamTokens (rpc/validate.ts) or a provider's token response (idp/token-response.ts).
// One set of rules, so what a provider answers can be stored, served and read back by any
// client exactly like what a caller stores. Problems are described, never the value.

export const tokenShape = {
  /** Access, refresh and id tokens: RFC 6749 §A.12/§A.13 VSCHAR; JWTs are base64url. */
  tokenMaxChars: 16_384,
  scopesMax: 100,
  scopeMaxChars: 256,
  tokenTypeMaxChars: 32,
  /** The longest lifetime a token may claim (expires_in, expires_at). */
  maxLifetimeSec: 366 * 24 * 3600,
} as const;

/** Printable ASCII without the space (0x21–0x7E). */
export const printableRe = /^[\x21-\x7e]+$/;
/** RFC 6749's NQCHAR: printable ASCII but `"` and `\`. */
const scopeRe = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
/** RFC 6749 §11.1's type-name. */
const typeNameRe = /^[A-Za-z0-9._-]+$/;

/** Why `v` is not token material of at most `max` characters, or undefined ("" is the caller's). */
export function tokenProblem(
  v: string,
  max: number = tokenShape.tokenMaxChars,
): string | undefined {
  if (v.length > max) return `longer than ${max} characters`;
  if (v !== "" && !printableRe.test(v)) return "must be printable ASCII without spaces";
  return undefined;
}

/** Why `v` is not an OAuth token type name, or undefined ("" is the caller's). */
export function typeNameProblem(v: string): string | undefined {
  if (v.length > tokenShape.tokenTypeMaxChars) {
    return `longer than ${tokenShape.tokenTypeMaxChars} characters`;
  }
  if (v !== "" && !typeNameRe.test(v)) return "must be letters, digits, '.', '_' or '-'";
  return undefined;
}

export const scopeRule = `must be 1–${tokenShape.scopeMaxChars} printable ASCII characters without spaces, '"' or '\\'`;

/** Whether `s` is one scope token. */
export function isScope(s: string): boolean {
  return s !== "" && s.length <= tokenShape.scopeMaxChars && scopeRe.test(s);
}
