// A provider's token response is checked against the rules a caller's StoreUpstreamTokens obeys
// (core/token-shape.ts) before anything stores or serves it: a token that could not have been
// stored is not kept either. A response that breaks them fails its request with a transient
// UpstreamError naming the field and the rule, never the value (the core keeps serving the
// current token while it lives and retries on its backoff).

import {
  isScope,
  scopeRule,
  tokenProblem,
  tokenShape,
  typeNameProblem,
} from "../core/token-shape.ts";
import { UpstreamError, type UpstreamTokenResponse } from "../core/upstream.ts";

export function checkedTokenResponse(
  res: UpstreamTokenResponse,
  what: string,
): UpstreamTokenResponse {
  const problems: string[] = [];
  const token = (field: string, v: string | undefined, required: boolean) => {
    if (v === undefined || v === "") {
      if (required) problems.push(`${field} is empty`);
      return;
    }
    const p = tokenProblem(v);
    if (p !== undefined) problems.push(`${field} ${p}`);
  };
  token("access_token", res.accessToken, true);
  token("refresh_token", res.refreshToken, false);
  token("id_token", res.idToken, false);
  const typeProblem = res.tokenType === "" ? "is empty" : typeNameProblem(res.tokenType);
  if (typeProblem !== undefined) problems.push(`token_type ${typeProblem}`);
  const exp = res.expiresInSec;
  if (
    exp !== undefined &&
    !(Number.isFinite(exp) && exp >= 0 && exp <= tokenShape.maxLifetimeSec)
  ) {
    problems.push(`expires_in must be 0 to ${tokenShape.maxLifetimeSec} seconds`);
  }
  const scopes = res.scopes ?? [];
  if (scopes.length > tokenShape.scopesMax) {
    problems.push(`scope has more than ${tokenShape.scopesMax} scopes`);
  } else if (!scopes.every(isScope)) {
    problems.push(`scope: each ${scopeRule}`);
  }
  if (problems.length === 0) return res;
  throw new UpstreamError(
    `${what}: the provider's token response is malformed: ${problems.join("; ")}`,
    {
      permanent: false,
      status: 200,
    },
  );
}
