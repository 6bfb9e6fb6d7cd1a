// Domain errors to the wire, in one table. Every error carries a
// google.rpc.ErrorInfo (domain "tokenvend"); INVALID_ARGUMENT and unknown
// names also carry BadRequest field violations. Anything unexpected becomes
// INTERNAL with a generic message: its own message may hold secrets.

import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

type OutgoingDetail = NonNullable<ConstructorParameters<typeof ConnectError>[3]>[number];

import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "../../gen/google/rpc/error_details_pb.js";
import { AuthError } from "../auth/index.ts";
import type { ErrorCode } from "../core/errors.ts";
import { isTokenVendError, stackless } from "../core/errors.ts";

export const errorDomain = "tokenvend";

/** The gRPC code of each domain error. */
export const grpcCodeOf: Readonly<Record<ErrorCode, Code>> = {
  SESSION_NOT_FOUND: Code.NotFound, // no tokens for that session/provider
  GRANT_NOT_FOUND: Code.NotFound, // no such configured grant
  PROVIDER_NOT_FOUND: Code.NotFound, // no such configured provider
  NO_REFRESH_TOKEN: Code.FailedPrecondition, // expired and nothing to renew it with
  REFRESH_FAILED: Code.FailedPrecondition, // provider rejected the refresh for good
  INVALID_BINDING: Code.PermissionDenied, // subject / client id differ from the caller's expectation
  UPSTREAM_UNAVAILABLE: Code.Unavailable, // provider down or 5xx, and no valid token to serve
  STORE_UNAVAILABLE: Code.Unavailable, // token store down, and no cached token to serve
  TOKEN_UNREADABLE: Code.DataLoss, // a stored token does not open with the keys (not retryable)
  INVALID_ARGUMENT: Code.InvalidArgument, // malformed request
  RESOURCE_EXHAUSTED: Code.ResourceExhausted, // a limit of this replica or of the caller (RetryInfo)
  SHUTTING_DOWN: Code.Unavailable, // this replica drains: reconnect elsewhere
  UNAUTHENTICATED: Code.Unauthenticated,
  PERMISSION_DENIED: Code.PermissionDenied,
  INVALID_STATE: Code.FailedPrecondition, // authorization state replayed, expired or unknown
  AUTHORIZATION_FAILED: Code.FailedPrecondition, // the provider refused the flow (metadata oauth_error)
  UNSUPPORTED: Code.FailedPrecondition, // the provider does not support it (token exchange)
  MIN_VALIDITY_UNREACHABLE: Code.FailedPrecondition, // longer than the provider's tokens live
};

const authCodes = {
  UNAUTHENTICATED: Code.Unauthenticated,
  PERMISSION_DENIED: Code.PermissionDenied,
  UNAVAILABLE: Code.Unavailable,
} as const;

/** The code toConnectError(err) would have, without building its error. */
export function codeOf(err: unknown): Code {
  if (err instanceof ConnectError) return err.code;
  if (isTokenVendError(err)) return grpcCodeOf[err.code];
  if (err instanceof AuthError) return authCodes[err.code];
  if (err instanceof DOMException && err.name === "TimeoutError") return Code.DeadlineExceeded;
  return Code.Internal;
}

/**
 * Converts any error thrown by the core into the ConnectError sent to the caller. The answer to a
 * domain or auth error carries no stack of its own: it is an answer, and floods of them happen.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (isTokenVendError(err) || err instanceof AuthError) return stackless(() => wireError(err));
  return wireError(err);
}

function wireError(err: unknown): ConnectError {
  if (isTokenVendError(err)) {
    const details: OutgoingDetail[] = [
      {
        desc: ErrorInfoSchema,
        value: {
          reason: err.reason ?? err.code,
          domain: errorDomain,
          metadata: { ...err.metadata },
        },
      },
    ];
    if (err.retryAfterMs !== undefined) {
      details.push({
        desc: RetryInfoSchema,
        value: { retryDelay: durationFromMs(Math.max(0, Math.ceil(err.retryAfterMs))) },
      });
    }
    if (err.fieldViolations.length > 0) {
      details.push({
        desc: BadRequestSchema,
        value: create(BadRequestSchema, { fieldViolations: [...err.fieldViolations] }),
      });
    }
    return new ConnectError(err.message, codeOf(err), undefined, details, err);
  }
  if (err instanceof AuthError) {
    // The rule that denied, so an operator reading the caller's error finds it in the policy.
    const metadata: Record<string, string> = err.rule !== undefined ? { rule: err.rule } : {};
    return new ConnectError(
      err.message,
      codeOf(err),
      undefined,
      [{ desc: ErrorInfoSchema, value: { reason: err.reason, domain: errorDomain, metadata } }],
      err,
    );
  }
  if (err instanceof DOMException && err.name === "TimeoutError") {
    return new ConnectError("deadline exceeded", Code.DeadlineExceeded, undefined, undefined, err);
  }
  return new ConnectError(
    "internal error",
    Code.Internal,
    undefined,
    [{ desc: ErrorInfoSchema, value: { reason: "INTERNAL", domain: errorDomain } }],
    err,
  );
}
