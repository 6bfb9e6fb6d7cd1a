// codeOf() names the code toConnectError() gives, without building the error (the per-caller
// failures limit asks it of every failed call).

import { Code, ConnectError } from "@connectrpc/connect";
import test from "ava";
import { AuthError } from "../auth/index.ts";
import { errorCodes, TokenVendError } from "../core/errors.ts";
import { codeOf, toConnectError } from "./error-mapping.ts";

test("codeOf(err) is toConnectError(err).code for every kind of error", (t) => {
  const errors: unknown[] = [
    ...errorCodes.map((c) => new TokenVendError(c, "x")),
    new AuthError("PERMISSION_DENIED", "INVALID_SESSION_TOKEN", "x"),
    new AuthError("UNAVAILABLE", "JWKS_UNAVAILABLE", "x"),
    new AuthError("UNAUTHENTICATED", "MISSING_CREDENTIALS", "x"),
    new ConnectError("x", Code.NotFound),
    new DOMException("x", "TimeoutError"),
    new Error("x"),
    "a string",
  ];
  for (const err of errors) t.is(codeOf(err), toConnectError(err).code, String(err));
});
