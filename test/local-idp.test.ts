// The local identity provider (real oidc-provider) driven over HTTP by the
// real upstream client: minted refresh tokens, rotation with reuse detection,
// client_credentials with both secret methods, revocation, counters, and an
// outage (stop, then start on the same port).

import { inspect } from "node:util";
import test from "ava";
import { UpstreamError } from "../src/core/upstream.ts";
import { type LocalIdp, startLocalIdp } from "../src/dev/local-idp.ts";
import { createUpstreamClient, type UpstreamProviderConfig } from "../src/idp/upstream-client.ts";

const live = new AbortController().signal;
let idp: LocalIdp;
const consoleCalls: string[] = [];

test.before(async () => {
  // oidc-provider prints its warnings once per process, on the first start:
  // watch the console around that start.
  const saved = { ...console };
  for (const m of ["log", "info", "warn", "error", "debug"] as const) {
    console[m] = (...args: unknown[]) => {
      consoleCalls.push(`${m}: ${args.map(String).join(" ")}`);
    };
  }
  try {
    idp = await startLocalIdp({ accessTokenTtlSec: 90 });
    const up = createUpstreamClient({
      maxResponseBytes: 64 * 1024,
      providers: new Map([["idp", cfg("tokenvend")]]),
    });
    await up.clientCredentials("idp", { signal: live, scopes: ["api:read"] });
    const m = await idp.mintRefreshToken({ clientId: "tokenvend", accountId: "warmup" });
    await up.refresh("idp", { signal: live, refreshToken: m.refreshToken });
    await idp.introspect(m.accessToken);
    await idp.revoke(m.accessToken);
  } finally {
    Object.assign(console, saved);
  }
});
test.after.always(async () => {
  await idp?.stop();
});

function cfg(clientId: string, over: Partial<UpstreamProviderConfig> = {}): UpstreamProviderConfig {
  const c = idp.client(clientId);
  return {
    issuer: idp.issuer,
    clientId: c.clientId,
    clientSecret: c.clientSecret,
    authMethod: c.authMethod,
    timeoutMs: 5_000,
    ...over,
  };
}

function upstream(clientId = "tokenvend", over: Partial<UpstreamProviderConfig> = {}) {
  return createUpstreamClient({
    maxResponseBytes: 64 * 1024,
    providers: new Map([["idp", cfg(clientId, over)]]),
  });
}

async function rejection(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof UpstreamError)) throw new Error(`expected UpstreamError: ${inspect(err)}`);
  return err;
}

function jwtPayload(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString()) as Record<
    string,
    unknown
  >;
}

test.serial("starting and using the IdP prints nothing", (t) => {
  t.deepEqual(consoleCalls, []);
});

test.serial("defaults: loopback issuer, two clients, endpoints under the issuer", (t) => {
  t.regex(idp.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.is(idp.issuer, `http://127.0.0.1:${idp.port}`);
  t.is(idp.tokenEndpoint, `${idp.issuer}/token`);
  t.is(idp.revocationEndpoint, `${idp.issuer}/token/revocation`);
  t.is(idp.introspectionEndpoint, `${idp.issuer}/token/introspection`);
  t.deepEqual(
    idp.clients.map((c) => [c.clientId, c.authMethod]),
    [
      ["tokenvend", "client_secret_basic"],
      ["tokenvend-post", "client_secret_post"],
    ],
  );
  for (const c of idp.clients) t.true((c.clientSecret ?? "").length >= 32);
  t.true(idp.running);
  t.throws(() => idp.client("nobody"), { message: 'local IdP: unknown client "nobody"' });
});

test.serial("a minted refresh token is real: oidc-provider redeems it", async (t) => {
  const minted = await idp.mintRefreshToken({
    clientId: "tokenvend",
    accountId: "alice",
    scope: "openid api:read",
  });
  t.deepEqual(minted.scopes, ["openid", "api:read", "offline_access"]);
  t.is(minted.expiresInSec, 90);
  const at = await idp.introspect(minted.accessToken);
  t.true(at.active);
  t.is(at.sub, "alice");
  t.is(at.client_id, "tokenvend");
  const rt = await idp.introspect(minted.refreshToken);
  t.true(rt.active);
  t.is(rt.sub, "alice");
  t.is(rt.scope, "openid api:read offline_access");
  const id = jwtPayload(minted.idToken ?? "");
  t.is(id.iss, idp.issuer);
  t.is(id.aud, "tokenvend");
  t.is(id.sub, "alice");

  const res = await upstream().refresh("idp", { signal: live, refreshToken: minted.refreshToken });
  t.is(res.expiresInSec, 90);
  t.deepEqual(res.scopes, ["openid", "api:read", "offline_access"]);
  t.is(jwtPayload(res.idToken ?? "").sub, "alice");
  t.is((await idp.introspect(res.accessToken)).sub, "alice");
});

test.serial("no openid scope, no ID token", async (t) => {
  const minted = await idp.mintRefreshToken({
    clientId: "tokenvend-post",
    accountId: "bob",
    scope: "api:write",
  });
  t.is(minted.idToken, undefined);
  t.deepEqual(minted.scopes, ["api:write", "offline_access"]);
  const res = await upstream("tokenvend-post").refresh("idp", {
    signal: live,
    refreshToken: minted.refreshToken,
  });
  t.is(res.idToken, undefined);
  t.truthy(res.refreshToken);
});

test.serial(
  "rotation: each refresh returns a new refresh token; reusing an old one is invalid_grant and revokes the grant",
  async (t) => {
    const up = upstream();
    const minted = await idp.mintRefreshToken({ clientId: "tokenvend", accountId: "carol" });
    const first = await up.refresh("idp", { signal: live, refreshToken: minted.refreshToken });
    const second = await up.refresh("idp", {
      signal: live,
      refreshToken: first.refreshToken ?? "",
    });
    t.truthy(second.refreshToken);
    t.not(second.refreshToken, first.refreshToken);
    t.not(first.refreshToken, minted.refreshToken);

    idp.resetCounters();
    const err = await rejection(
      up.refresh("idp", { signal: live, refreshToken: minted.refreshToken }),
    );
    t.true(err.permanent);
    t.is(err.oauthError, "invalid_grant");
    t.is(err.status, 400);
    t.is(idp.counters.invalidGrant, 1);
    // Reuse detection: the newest refresh token died with the grant.
    const after = await rejection(
      up.refresh("idp", { signal: live, refreshToken: second.refreshToken ?? "" }),
    );
    t.is(after.oauthError, "invalid_grant");
    t.is(idp.counters.invalidGrant, 2);
    t.deepEqual(idp.counters.tokenRequests, { refresh_token: 2 });
  },
);

test.serial("a refresh token belongs to its client", async (t) => {
  const minted = await idp.mintRefreshToken({ clientId: "tokenvend", accountId: "dave" });
  const err = await rejection(
    upstream("tokenvend-post").refresh("idp", { signal: live, refreshToken: minted.refreshToken }),
  );
  t.is(err.oauthError, "invalid_grant");
  t.true(err.permanent);
});

test.serial("client_credentials with client_secret_basic and client_secret_post", async (t) => {
  const basic = await upstream("tokenvend").clientCredentials("idp", {
    signal: live,
    scopes: ["api:read"],
  });
  t.regex(idp.counters.lastTokenRequestHeaders?.authorization ?? "", /^Basic /);
  const post = await upstream("tokenvend-post").clientCredentials("idp", {
    signal: live,
    scopes: ["api:write"],
  });
  t.is(idp.counters.lastTokenRequestHeaders?.authorization, undefined);
  const [b, p] = await Promise.all([
    idp.introspect(basic.accessToken),
    idp.introspect(post.accessToken),
  ]);
  t.is(b.client_id, "tokenvend");
  t.is(b.scope, "api:read");
  t.is(p.client_id, "tokenvend-post");
  t.is(p.scope, "api:write");
  t.is(basic.expiresInSec, 90);
});

test.serial("an unknown scope on client_credentials is dropped by oidc-provider", async (t) => {
  const res = await upstream().clientCredentials("idp", {
    signal: live,
    scopes: ["api:read", "not-a-scope"],
  });
  t.deepEqual(res.scopes, ["api:read"]);
});

test.serial("revocation: by the upstream client and by the helper", async (t) => {
  const up = upstream();
  const a = await idp.mintRefreshToken({ clientId: "tokenvend", accountId: "erin" });
  idp.resetCounters();
  await up.revoke("idp", { signal: live, token: a.refreshToken, tokenTypeHint: "refresh_token" });
  t.is(idp.counters.revocationRequests, 1);
  t.false((await idp.introspect(a.refreshToken)).active);
  // Revoking a refresh token revokes its grant, access tokens included.
  t.false((await idp.introspect(a.accessToken)).active);
  const err = await rejection(up.refresh("idp", { signal: live, refreshToken: a.refreshToken }));
  t.is(err.oauthError, "invalid_grant");

  const b = await idp.mintRefreshToken({ clientId: "tokenvend-post", accountId: "frank" });
  await idp.revoke(b.refreshToken, "tokenvend-post");
  t.false((await idp.introspect(b.refreshToken)).active);
  t.is(idp.counters.revocationRequests, 2);
  // Revoking an unknown token is not an error (RFC 7009 §2.2).
  await up.revoke("idp", { signal: live, token: "no-such-token", tokenTypeHint: "access_token" });
});

test.serial("counters: by grant type, invalid_grant, last request headers; reset", async (t) => {
  idp.resetCounters();
  t.deepEqual(idp.counters, {
    tokenRequests: {},
    invalidGrant: 0,
    revocationRequests: 0,
    introspectionRequests: 0,
    discoveryRequests: 0,
    lastTokenRequestHeaders: undefined,
    lastRequestHeaders: undefined,
  });
  const up = createUpstreamClient({
    maxResponseBytes: 64 * 1024,
    providers: new Map([["idp", cfg("tokenvend")]]),
    fetch: (url, init) => {
      const headers = new Headers(init.headers);
      headers.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
      return fetch(url, { ...init, headers });
    },
  });
  await up.clientCredentials("idp", { signal: live });
  await up.clientCredentials("idp", { signal: live });
  await rejection(up.refresh("idp", { signal: live, refreshToken: "not-a-refresh-token" }));
  await idp.introspect("whatever");
  const c = idp.counters;
  t.deepEqual(c.tokenRequests, { client_credentials: 2, refresh_token: 1 });
  t.is(c.invalidGrant, 1);
  t.is(c.discoveryRequests, 1);
  t.is(c.introspectionRequests, 1);
  t.is(
    c.lastTokenRequestHeaders?.traceparent,
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  );
  t.is(c.lastRequestHeaders?.traceparent, undefined, "the last request was the introspection");
  // A snapshot: later requests do not change it.
  await up.clientCredentials("idp", { signal: live });
  t.is(c.tokenRequests.client_credentials, 2);
  t.is(idp.counters.tokenRequests.client_credentials, 3);
});

test.serial("a rejected client is counted too", async (t) => {
  idp.resetCounters();
  const err = await rejection(
    upstream("tokenvend", { clientSecret: "wrong" }).clientCredentials("idp", { signal: live }),
  );
  t.is(err.oauthError, "invalid_client");
  t.deepEqual(idp.counters.tokenRequests, { client_credentials: 1 });
  t.is(idp.counters.invalidGrant, 0);
});

test.serial(
  "stop and start on the same port: an outage, then everything still works",
  async (t) => {
    const up = upstream();
    const minted = await idp.mintRefreshToken({ clientId: "tokenvend", accountId: "gina" });
    await up.clientCredentials("idp", { signal: live }); // discovery cached, connection pooled
    const port = idp.port;

    await idp.stop();
    t.false(idp.running);
    await idp.stop(); // idempotent
    for (let i = 0; i < 2; i++) {
      const err = await rejection(
        up.refresh("idp", { signal: live, refreshToken: minted.refreshToken }),
      );
      t.false(err.permanent);
      t.is(err.status, undefined);
    }

    await idp.start();
    t.true(idp.running);
    t.is(idp.port, port);
    await idp.start(); // idempotent
    // Tokens and grants survived; the failed attempts consumed nothing.
    const res = await up.refresh("idp", { signal: live, refreshToken: minted.refreshToken });
    t.truthy(res.refreshToken);
    t.true((await idp.introspect(res.accessToken)).active);
  },
);

test("audiences: only the configured ones are accepted (invalid_target, transient)", async (t) => {
  await using other = await startLocalIdp({ audiences: ["https://orders.example.test"] });
  const c = other.client("tokenvend");
  const up = createUpstreamClient({
    maxResponseBytes: 64 * 1024,
    providers: new Map([
      [
        "o",
        {
          tokenEndpoint: other.tokenEndpoint,
          clientId: c.clientId,
          clientSecret: c.clientSecret,
          authMethod: "client_secret_basic",
          timeoutMs: 5_000,
        },
      ],
    ]),
  });
  const ok = await up.clientCredentials("o", {
    signal: live,
    scopes: ["api:read"],
    audience: "https://orders.example.test",
  });
  t.is((await other.introspect(ok.accessToken)).aud, "https://orders.example.test");
  const err = await rejection(
    up.clientCredentials("o", { signal: live, audience: "https://billing.example.test" }),
  );
  t.is(err.oauthError, "invalid_target");
  t.false(err.permanent);
});

test("custom clients, a fixed secret, a public client, scopes and TTLs", async (t) => {
  await using other = await startLocalIdp({
    clients: [
      { clientId: "svc", clientSecret: "svc-secret", authMethod: "client_secret_post" },
      { clientId: "spa", authMethod: "none" },
    ],
    scopes: ["read"],
    accessTokenTtlSec: 30,
    refreshTokenTtlSec: 600,
  });
  t.is(other.client("svc").clientSecret, "svc-secret");
  t.is(other.client("spa").clientSecret, undefined);
  const minted = await other.mintRefreshToken({ clientId: "spa", accountId: "hank" });
  t.deepEqual(minted.scopes, ["openid", "offline_access", "read"]);
  t.is(minted.expiresInSec, 30);
  const up = createUpstreamClient({
    maxResponseBytes: 64 * 1024,
    providers: new Map([
      ["spa", { issuer: other.issuer, clientId: "spa", authMethod: "none", timeoutMs: 5_000 }],
    ]),
  });
  const res = await up.refresh("spa", { signal: live, refreshToken: minted.refreshToken });
  t.not(res.refreshToken, minted.refreshToken);
  const rt = await other.introspect(res.refreshToken ?? "", "svc");
  t.true(rt.active);
  t.true((rt.exp ?? 0) - (rt.iat ?? 0) <= 600);
});

test("mint checks its input", async (t) => {
  await t.throwsAsync(idp.mintRefreshToken({ clientId: "nobody", accountId: "x" }), {
    message: 'local IdP: unknown client "nobody"',
  });
  await t.throwsAsync(idp.mintRefreshToken({ clientId: "tokenvend", accountId: "" }), {
    message: "local IdP: accountId must not be empty",
  });
  await t.throwsAsync(
    idp.mintRefreshToken({ clientId: "tokenvend", accountId: "x", scope: "openid admin" }),
    { message: "local IdP: unknown scope(s) admin" },
  );
});

test("options are checked", async (t) => {
  await t.throwsAsync(startLocalIdp({ accessTokenTtlSec: 0 }), {
    message: "startLocalIdp: accessTokenTtlSec must be a positive integer; got 0",
  });
  await t.throwsAsync(startLocalIdp({ clients: [] }), {
    message: "startLocalIdp: clients must not be empty",
  });
});
