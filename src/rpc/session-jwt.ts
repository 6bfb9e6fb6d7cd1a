// A caller may name a session by the end user's session JWT instead of its raw
// id (header tokenvend-session-jwt, toolhive's binding): the JWT, from a
// configured issuer, names the session in its tsid claim, and its client_id
// must match the client the tokens were stored for. A policy rule with
// `sessions: token` requires one.

import type { HandlerContext } from "@connectrpc/connect";
import { type Allowed, AuthError, type Caller, denied, type JwtVerifier } from "../auth/index.ts";

export const sessionJwtHeader = "tokenvend-session-jwt";

export interface SessionOfJwt {
  readonly id: string;
  readonly clientId: string | undefined;
}

/**
 * The session the call's session JWT names, if it sent one; throws
 * PERMISSION_DENIED. `caller` carries the JWT when authentication read it; without
 * authentication it is read from the call's headers.
 */
export async function sessionOf(
  ctx: HandlerContext,
  caller: Caller | undefined,
  rule: Allowed | undefined,
  verifier: JwtVerifier | undefined,
): Promise<SessionOfJwt | undefined> {
  const jwt =
    caller !== undefined
      ? caller.sessionJwt
      : (ctx.requestHeader.get(sessionJwtHeader) ?? undefined);
  if (jwt === undefined) {
    if (rule?.sessions === "token") {
      throw denied(
        "SESSION_TOKEN_REQUIRED",
        `rule ${rule.rule} needs the end user's session JWT (${sessionJwtHeader})`,
        rule.rule,
      );
    }
    return undefined;
  }
  if (verifier === undefined) {
    throw denied("INVALID_SESSION_TOKEN", "session JWTs are not configured here");
  }
  let claims: Record<string, unknown>;
  try {
    claims = (await verifier.verify(jwt)).claims;
  } catch (err) {
    // An issuer that cannot be reached is UNAVAILABLE (retry), not a bad token.
    if (err instanceof AuthError && err.code === "UNAVAILABLE") throw err;
    const reason = err instanceof AuthError ? err.reason : "MALFORMED_CREDENTIALS";
    throw denied("INVALID_SESSION_TOKEN", `the session JWT is not acceptable (${reason})`);
  }
  if (typeof claims.tsid !== "string" || claims.tsid === "") {
    throw denied("INVALID_SESSION_TOKEN", "the session JWT has no tsid claim");
  }
  return {
    id: claims.tsid,
    clientId: typeof claims.client_id === "string" ? claims.client_id : undefined,
  };
}

/** The session id a call uses: the request's, or the session JWT's (they must agree). */
export function sessionId(requested: string, session: SessionOfJwt | undefined): string {
  if (session === undefined) return requested;
  if (requested !== "" && requested !== session.id) {
    throw denied("INVALID_SESSION_TOKEN", "session_id differs from the session JWT's tsid");
  }
  return session.id;
}

/** The client id a session JWT binds to; a request expecting another one is refused. */
export function boundClient(requested: string, session: SessionOfJwt | undefined): string {
  const bound = session?.clientId ?? "";
  if (requested !== "" && bound !== "" && requested !== bound) {
    throw denied(
      "INVALID_SESSION_TOKEN",
      "expected_client_id differs from the session JWT's client_id",
    );
  }
  return bound || requested;
}

/** A session named with its expected client, as the call's session JWT names and binds them. */
export function boundTarget<T extends { sessionId: string; expectedClientId: string }>(
  x: T,
  session: SessionOfJwt | undefined,
): T {
  if (session === undefined) return x;
  return {
    ...x,
    sessionId: sessionId(x.sessionId, session),
    expectedClientId: boundClient(x.expectedClientId, session),
  };
}
