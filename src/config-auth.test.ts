// The security sections are validated once, with errors that name the option.

import test from "ava";
import { parseConfig } from "./config.ts";

const parse = (
  raw: Record<string, unknown>,
  files: Record<string, string> = {},
  env: Record<string, string> = {},
) =>
  parseConfig(raw, {
    env,
    readFile: (p) => {
      const f = files[p];
      if (f === undefined) throw new Error("ENOENT");
      return f;
    },
  });
const message = (f: () => unknown) => {
  try {
    f();
    return "parsed";
  } catch (err) {
    return (err as Error).message;
  }
};

test("no auth section: authentication off and not explicitly so; auth.disabled says so", (t) => {
  t.like(parse({}).auth, { enabled: false, explicitlyDisabled: false });
  t.like(parse({ auth: { disabled: true } }).auth, { enabled: false, explicitlyDisabled: true });
  t.is(
    message(() => parse({ auth: { disabled: true, mtls: true } })),
    "auth.disabled: true cannot go with auth.jwt, auth.apiKeys or auth.mtls",
  );
});

test("a JWT issuer: defaults filled in, and each option checked by name", (t) => {
  const c = parse({
    auth: { jwt: { issuers: [{ issuer: "https://k8s.example", audiences: ["tokenvend"] }] } },
  });
  t.true(c.auth.enabled);
  t.deepEqual(c.auth.jwtIssuers, [
    {
      issuer: "https://k8s.example",
      kind: "kubernetes",
      jwksUri: undefined,
      audiences: ["tokenvend"],
      algorithms: ["RS256", "ES256"],
      clockToleranceMs: 30_000,
      jwksCooldownMs: 30_000,
      jwksMaxAgeMs: 600_000,
      jwksTimeoutMs: 5_000,
    },
  ]);
  const issuer = (o: Record<string, unknown>) => () =>
    parse({ auth: { jwt: { issuers: [{ issuer: "https://k", audiences: ["a"], ...o }] } } });
  t.is(
    message(issuer({ audiences: [] })),
    "auth.jwt.issuers[0].audiences must name at least one audience (for Kubernetes: tokenvend)",
  );
  t.is(
    message(issuer({ algorithms: ["HS256"] })),
    'auth.jwt.issuers[0].algorithms must be asymmetric JWS algorithms (RS256, ES256, EdDSA...); got "HS256"',
  );
  t.is(
    message(issuer({ kind: "saml" })),
    'auth.jwt.issuers[0].kind must be kubernetes or oidc; got "saml"',
  );
  t.is(
    message(issuer({ jwksUri: "ftp://x" })),
    'auth.jwt.issuers[0].jwksUri must be an http(s) URL; got "ftp://x"',
  );
  t.is(
    message(issuer({ maxTokenAge: "soon" })),
    'auth.jwt.issuers[0].maxTokenAge must be a duration such as "500ms", "30s", "5m" or "1h"; got "soon"',
  );
});

test("policy rules: permissions, scopes and callers checked; a lone * caller refused", (t) => {
  const rule = (o: Record<string, unknown>) => () =>
    parse({ policy: { rules: [{ name: "r", callers: ["a"], allow: ["GetToken"], ...o }] } });
  t.deepEqual(
    parse({ policy: { rules: [{ callers: ["a"], allow: ["GetToken"], grants: ["g"] }] } }).policy,
    [
      {
        name: "rule-1",
        callers: ["a"],
        allow: ["GetToken"],
        providers: [],
        grants: ["g"],
        sessions: "own",
      },
    ],
  );
  t.regex(
    message(rule({ allow: ["Everything"] })),
    /^policy\.rules\[0\]\.allow must list permissions of StoreUpstreamTokens, .*; got "Everything"$/,
  );
  t.is(
    message(rule({ callers: ["*"] })),
    'policy.rules[0].callers: "*" alone would let any caller in; name them',
  );
  t.is(
    message(rule({ sessions: "all" })),
    'policy.rules[0].sessions must be own, any or token; got "all"',
  );
  t.is(
    message(rule({ colour: "red" })),
    "policy.rules[0].colour is not an option; expected one of name, callers, allow, providers, grants, sessions, tenant",
  );
});

test("API keys from a file, TLS, mTLS and audit: each needs what it needs", (t) => {
  const sha = "a".repeat(64);
  const keys = parse(
    { auth: { apiKeys: { file: "/k" } } },
    { "/k": `keys:\n  - id: ci\n    sha256: ${sha}\n    expires: 2027-01-01T00:00:00Z\n` },
  );
  t.deepEqual(keys.auth.apiKeys, [
    { id: "ci", sha256: sha, expiresAt: Date.parse("2027-01-01T00:00:00Z") },
  ]);
  t.is(
    message(() =>
      parse(
        { auth: { apiKeys: { file: "/k" } } },
        { "/k": "keys:\n  - id: ci\n    sha256: nothex\n" },
      ),
    ),
    "auth.apiKeys.file (/k) keys[0].sha256 must be 64 lower-case hex digits",
  );
  t.is(
    message(() => parse({ auth: { mtls: true } })),
    "auth.mtls needs tls.clientCaFile (the CA client certificates chain to)",
  );
  t.is(
    message(() => parse({ tls: { certFile: "/c" } })),
    "tls needs certFile and keyFile",
  );
  t.is(
    message(() => parse({ audit: { sink: "stdout" } })),
    "audit needs an HMAC key for session ids: audit.hmacKeyFile or TOKENVEND_AUDIT_HMAC_KEY",
  );
  t.is(
    message(() =>
      parse({ audit: { sink: "stdout" } }, {}, { TOKENVEND_AUDIT_HMAC_KEY: "c2hvcnQ=" }),
    ),
    "TOKENVEND_AUDIT_HMAC_KEY must be at least 32 bytes, base64 (openssl rand -base64 32)",
  );
  t.like(
    parse(
      { audit: { sink: "file", file: "/a", failClosed: true } },
      {},
      { TOKENVEND_AUDIT_HMAC_KEY: Buffer.alloc(32).toString("base64") },
    ).audit,
    { target: { kind: "file", path: "/a" }, failClosed: true },
  );
});
