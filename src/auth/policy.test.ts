// The policy denies by default; the first rule that names the caller and
// allows the whole request decides; a denial names the check that failed.

import test from "ava";
import type { Caller } from "./caller.ts";
import { AuthError } from "./caller.ts";
import { createPolicy, type PolicyRule } from "./policy.ts";

const caller = (id: string): Caller => ({ id, method: "jwt", peer: "127.0.0.1:1" });
const rule = (
  r: Partial<PolicyRule> & Pick<PolicyRule, "name" | "callers" | "allow">,
): PolicyRule => ({
  providers: [],
  grants: [],
  sessions: "own",
  ...r,
});
const policy = createPolicy([
  rule({
    name: "billing",
    callers: ["system:serviceaccount:billing:*"],
    allow: ["GetToken"],
    grants: ["billing-*"],
  }),
  rule({
    name: "login",
    callers: ["system:serviceaccount:auth:login"],
    allow: ["StoreUpstreamTokens", "RevokeSession"],
    providers: ["corp"],
    tenant: "web",
  }),
  rule({
    name: "ops",
    callers: ["system:serviceaccount:ops:*"],
    allow: ["GetValidTokens", "RevokeSession", "RevokeUpstream"],
    providers: ["*"],
    sessions: "any",
  }),
]);
const outcome = (id: string, req: Parameters<typeof policy.authorize>[1]) => {
  try {
    const a = policy.authorize(caller(id), req);
    return { rule: a.rule, owner: a.owner, sessions: a.sessions };
  } catch (err) {
    return err instanceof AuthError
      ? `${err.code} ${err.reason} (${err.rule ?? "-"})`
      : String(err);
  }
};

test("patterns name callers, grants and providers; a tenant owns what its rule stores", (t) => {
  t.deepEqual(
    outcome("system:serviceaccount:billing:cron", { method: "GetToken", grant: "billing-api" }),
    {
      rule: "billing",
      owner: "system:serviceaccount:billing:cron",
      sessions: "own",
    },
  );
  t.deepEqual(
    outcome("system:serviceaccount:auth:login", {
      method: "StoreUpstreamTokens",
      provider: "corp",
    }),
    {
      rule: "login",
      owner: "tenant:web",
      sessions: "own",
    },
  );
  t.deepEqual(
    outcome("system:serviceaccount:ops:a", {
      method: "RevokeSession",
      provider: "*",
      revokeUpstream: true,
    }),
    {
      rule: "ops",
      owner: "system:serviceaccount:ops:a",
      sessions: "any",
    },
  );
});

test("deny by default, with the check that failed and the rule that came closest", (t) => {
  t.is(
    outcome("system:serviceaccount:other:x", { method: "GetToken", grant: "billing-api" }),
    "PERMISSION_DENIED NO_RULE (-)",
  );
  // A pattern matches whole ids only: no prefix tricks.
  t.is(
    outcome("system:serviceaccount:billing", { method: "GetToken", grant: "billing-api" }),
    "PERMISSION_DENIED NO_RULE (-)",
  );
  t.is(
    outcome("system:serviceaccount:billing:cron", { method: "WatchToken", grant: "billing-api" }),
    "PERMISSION_DENIED METHOD_NOT_ALLOWED (billing)",
  );
  t.is(
    outcome("system:serviceaccount:billing:cron", { method: "GetToken", grant: "payroll" }),
    "PERMISSION_DENIED GRANT_NOT_ALLOWED (billing)",
  );
  t.is(
    outcome("system:serviceaccount:auth:login", {
      method: "StoreUpstreamTokens",
      provider: "other",
    }),
    "PERMISSION_DENIED PROVIDER_NOT_ALLOWED (login)",
  );
  // Revoking at the provider is a permission of its own; every provider (*) is too.
  t.is(
    outcome("system:serviceaccount:auth:login", {
      method: "RevokeSession",
      provider: "corp",
      revokeUpstream: true,
    }),
    "PERMISSION_DENIED METHOD_NOT_ALLOWED (login)",
  );
  t.is(
    outcome("system:serviceaccount:auth:login", { method: "RevokeSession", provider: "*" }),
    "PERMISSION_DENIED PROVIDER_NOT_ALLOWED (login)",
  );
  // A decision remembered for one request is not reused for another.
  t.is(
    outcome("system:serviceaccount:billing:cron", {
      method: "GetToken",
      grant: "billing-api",
    }) instanceof Object,
    true,
  );
  t.is(
    outcome("system:serviceaccount:billing:cron", {
      method: "GetToken",
      grant: "billing-x",
    }) instanceof Object,
    true,
  );
  t.is(
    outcome("system:serviceaccount:billing:cron", { method: "GetToken", grant: "billingapi" }),
    "PERMISSION_DENIED GRANT_NOT_ALLOWED (billing)",
  );
});
