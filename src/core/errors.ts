// The domain's error set: small, flat, with stable string codes. Messages are
// factual and never contain token material. The wire mapping lives in src/rpc.

import type { TokenKey } from "./token.ts";

export const errorCodes = [
  "SESSION_NOT_FOUND",
  "GRANT_NOT_FOUND",
  "PROVIDER_NOT_FOUND",
  "NO_REFRESH_TOKEN",
  "REFRESH_FAILED",
  "INVALID_BINDING",
  "UPSTREAM_UNAVAILABLE",
  "STORE_UNAVAILABLE",
  /** A stored token exists but cannot be opened (keys, tampering): not transient. */
  "TOKEN_UNREADABLE",
  "INVALID_ARGUMENT",
  "RESOURCE_EXHAUSTED",
  "SHUTTING_DOWN",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
] as const;

export type ErrorCode = (typeof errorCodes)[number];

export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

export class TokenVendError extends Error {
  override readonly name = "TokenVendError";
  readonly code: ErrorCode;
  readonly fieldViolations: readonly FieldViolation[];

  constructor(
    code: ErrorCode,
    message: string,
    opts: { cause?: unknown; fieldViolations?: readonly FieldViolation[] } = {},
  ) {
    super(message, { cause: opts.cause });
    this.code = code;
    this.fieldViolations = opts.fieldViolations ?? [];
  }
}

export function invalidArgument(violations: readonly FieldViolation[]): TokenVendError {
  const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new TokenVendError("INVALID_ARGUMENT", `invalid request: ${summary}`, {
    fieldViolations: violations,
  });
}

export function isTokenVendError(err: unknown, code?: ErrorCode): err is TokenVendError {
  return err instanceof TokenVendError && (code === undefined || err.code === code);
}

/** Whatever was asked for has no token (never stored, or revoked). */
export function notFoundError(key: TokenKey): TokenVendError {
  return key.kind === "session"
    ? new TokenVendError(
        "SESSION_NOT_FOUND",
        `no tokens for this session at provider "${key.provider}"`,
      )
    : new TokenVendError("GRANT_NOT_FOUND", `grant "${key.grant}" has no token`);
}

export function shuttingDownError(): TokenVendError {
  return new TokenVendError("SHUTTING_DOWN", "this replica is shutting down; reconnect to another");
}
