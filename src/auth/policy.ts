// Deny by default. Rules map caller identities (exact ids, or patterns with *,
// such as system:serviceaccount:billing:*) to the methods they may call and the
// providers, grants and sessions they may touch. The first rule, in order,
// that names the caller and allows the whole request decides. Revoking at the
// provider (RevokeSession with revoke_upstream) needs the RevokeUpstream
// permission besides RevokeSession. A denial says which check failed.

import { type Caller, type DenyReason, denied } from "./caller.ts";

/** Which sessions a rule reaches: the caller's own, any, or those it shows a session JWT for. */
export type SessionScope = "own" | "any" | "token";

export const permissions = [
  "StoreUpstreamTokens",
  "GetValidTokens",
  "GetAllUpstreamCredentials",
  "GetToken",
  "WatchToken",
  "RevokeSession",
  "RevokeUpstream",
  "StartAuthorization",
  "CompleteAuthorization",
  "StartDeviceAuthorization",
  "ExchangeToken",
] as const;
export type Permission = (typeof permissions)[number];

export interface PolicyRule {
  readonly name: string;
  /** Caller ids; `*` matches any run of characters. */
  readonly callers: readonly string[];
  readonly allow: readonly Permission[];
  /** Provider names (patterns); empty: none. */
  readonly providers: readonly string[];
  /** Grant names (patterns); empty: none. */
  readonly grants: readonly string[];
  readonly sessions: SessionScope;
  /** Sessions this rule stores are owned by `tenant:<name>` instead of the caller. */
  readonly tenant?: string | undefined;
}

export interface AccessRequest {
  readonly method: Permission;
  readonly provider?: string | undefined;
  readonly grant?: string | undefined;
  readonly revokeUpstream?: boolean | undefined;
}

export interface Allowed {
  readonly rule: string;
  readonly sessions: SessionScope;
  /** The owner this caller stores sessions as and reads its own sessions as. */
  readonly owner: string;
  /** Whether the rule reaches a provider (GetAllUpstreamCredentials filters by it). */
  providerAllowed(provider: string): boolean;
}

export interface Policy {
  /** The rule that allows the request; throws PERMISSION_DENIED with the failed check. */
  authorize(caller: Caller, req: AccessRequest): Allowed;
}

function matcher(patterns: readonly string[]): (v: string) => boolean {
  const exact = new Set(patterns.filter((p) => !p.includes("*")));
  const globs = patterns
    .filter((p) => p.includes("*"))
    .map((p) => new RegExp(`^${p.split("*").map(escapeRegExp).join(".*")}$`, "s"));
  return (v) => exact.has(v) || globs.some((g) => g.test(v));
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export function createPolicy(rules: readonly PolicyRule[]): Policy {
  const compiled = rules.map((r) => ({
    rule: r,
    caller: matcher(r.callers),
    provider: matcher(r.providers),
    grant: matcher(r.grants),
    allow: new Set<Permission>(r.allow),
  }));
  // The policy is fixed: an allowed (caller, request) stays allowed. Bounded: cleared when full.
  const allowedBefore = new Map<string, Allowed>();
  const authorize = (caller: Caller, req: AccessRequest): Allowed => {
    const key = `${caller.id}\u0000${req.method}\u0000${req.provider ?? ""}\u0000${req.grant ?? ""}\u0000${req.revokeUpstream === true}`;
    const known = allowedBefore.get(key);
    if (known !== undefined) return known;
    const allowed = decide(caller, req);
    if (allowedBefore.size >= maxRemembered) allowedBefore.clear();
    allowedBefore.set(key, allowed);
    return allowed;
  };
  const decide = (caller: Caller, req: AccessRequest): Allowed => {
    const mine = compiled.filter((c) => c.caller(caller.id));
    if (mine.length === 0) {
      throw denied("NO_RULE", `no policy rule names caller ${caller.id}`);
    }
    // The most specific failure among the caller's rules, for the message.
    let failure: { reason: DenyReason; message: string; rule: string } | undefined;
    const fail = (reason: DenyReason, message: string, rule: string) => {
      if (failure === undefined || rank[reason] > rank[failure.reason]) {
        failure = { reason, message, rule };
      }
    };
    for (const c of mine) {
      const name = c.rule.name;
      if (!c.allow.has(req.method)) {
        fail("METHOD_NOT_ALLOWED", `rule ${name} does not allow ${req.method}`, name);
        continue;
      }
      if (req.revokeUpstream === true && !c.allow.has("RevokeUpstream")) {
        fail("METHOD_NOT_ALLOWED", `rule ${name} does not allow RevokeUpstream`, name);
        continue;
      }
      if (req.provider !== undefined && !c.provider(req.provider)) {
        fail("PROVIDER_NOT_ALLOWED", `rule ${name} does not reach provider ${req.provider}`, name);
        continue;
      }
      if (req.grant !== undefined && !c.grant(req.grant)) {
        fail("GRANT_NOT_ALLOWED", `rule ${name} does not reach grant ${req.grant}`, name);
        continue;
      }
      return {
        rule: name,
        sessions: c.rule.sessions,
        owner: c.rule.tenant !== undefined ? `tenant:${c.rule.tenant}` : caller.id,
        providerAllowed: c.provider,
      };
    }
    const f = failure as unknown as { reason: DenyReason; message: string; rule: string };
    throw denied(f.reason, f.message, f.rule);
  };
  return { authorize };
}

const maxRemembered = 10_000;

const rank: Record<DenyReason, number> = {
  NO_RULE: 0,
  METHOD_NOT_ALLOWED: 1,
  PROVIDER_NOT_ALLOWED: 2,
  GRANT_NOT_ALLOWED: 2,
  NOT_OWNER: 3,
  SESSION_TOKEN_REQUIRED: 3,
  INVALID_SESSION_TOKEN: 3,
};
