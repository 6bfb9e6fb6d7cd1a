// What the generated-stub clients (Go, Java) must report for the calls they share: a grant's
// credential as the Node client sees it, and the errors with their google.rpc details.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Credential } from "../../gen/tokenvend/v1/token_service_pb.js";

/** The `demo` grant's credential, in the clients' snake_case JSON. */
export function grantAnswer(demo: Credential) {
  return {
    access_token: demo.accessToken,
    id_token: demo.idToken,
    token_type: "Bearer",
    scopes: ["api:read"],
    generation: 1,
    expires_at_ms: timestampMs(demo.expiresAt!),
  };
}

/** An unknown session, another subject, and a store without an access token. */
export const errorAnswers = {
  not_found: { code: "NOT_FOUND", reason: "SESSION_NOT_FOUND", domain: "tokenvend" },
  wrong_subject: { code: "PERMISSION_DENIED", reason: "INVALID_BINDING", domain: "tokenvend" },
  missing_access_token: {
    code: "INVALID_ARGUMENT",
    reason: "INVALID_ARGUMENT",
    domain: "tokenvend",
    violations: [{ field: "access_token", description: "required" }],
  },
};
