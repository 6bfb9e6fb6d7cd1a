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
  "INVALID_STATE",
  "AUTHORIZATION_FAILED",
  "UNSUPPORTED",
  /** The caller asked for a minimum validity longer than the provider's tokens live. */
  "MIN_VALIDITY_UNREACHABLE",
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
  /** Sent as the ErrorInfo metadata (AUTHORIZATION_FAILED: the provider's `oauth_error`). */
  readonly metadata: Readonly<Record<string, string>>;
  /** A finer reason than the code, for ErrorInfo (NOT_OWNER for a PERMISSION_DENIED). */
  readonly reason: string | undefined;
  /** When the caller may try again (RESOURCE_EXHAUSTED, an overloaded provider): RetryInfo. */
  readonly retryAfterMs: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: {
      cause?: unknown;
      fieldViolations?: readonly FieldViolation[];
      metadata?: Readonly<Record<string, string>>;
      reason?: string;
      retryAfterMs?: number;
    } = {},
  ) {
    // An answer to a caller, not a fault: no stack (a flood of refusals must stay cheap).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message, { cause: opts.cause });
    Error.stackTraceLimit = limit;
    this.code = code;
    this.fieldViolations = opts.fieldViolations ?? [];
    this.metadata = opts.metadata ?? {};
    this.reason = opts.reason;
    this.retryAfterMs = opts.retryAfterMs;
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

/** A session that belongs to another owner than the caller's. */
export function notOwnerError(): TokenVendError {
  return new TokenVendError("PERMISSION_DENIED", "this session belongs to another owner", {
    reason: "NOT_OWNER",
  });
}

export function shuttingDownError(): TokenVendError {
  return new TokenVendError("SHUTTING_DOWN", "this replica is shutting down; reconnect to another");
}

/** Builds an error without capturing a stack: refusals are answers, not faults. */
export function stackless<T>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}
