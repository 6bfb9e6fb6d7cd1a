// The upstream client against the real oidc-provider (src/dev/local-idp.ts):
// both client authentication methods, refresh with rotation, revocation,
// discovery, injected fetch, the service's signal, and option checks.
// Faults a real provider cannot be made to show: upstream-faults.test.ts.

import { inspect } from "node:util";
import test from "ava";
import { client, upstreamError } from "../../test/support/upstream-calls.ts";
import { type LocalIdp, startLocalIdp } from "../dev/local-idp.ts";
import type { UpstreamProviderConfig } from "./upstream-client.ts";

const live = new AbortController().signal;

let idp: LocalIdp;
test.before(async () => {
  idp = await startLocalIdp({ accessTokenTtlSec: 120 });
});
test.after.always(async () => {
  await idp?.stop();
});

function basic(): UpstreamProviderConfig {
  const c = idp.client("tokenvend");
  return {
    issuer: idp.issuer,
    clientId: c.clientId,
    clientSecret: c.clientSecret,
    authMethod: "client_secret_basic",
    timeoutMs: 5_000,
  };
}

function post(): UpstreamProviderConfig {
  const c = idp.client("tokenvend-post");
  return {
    issuer: idp.issuer,
    clientId: c.clientId,
    clientSecret: c.clientSecret,
    authMethod: "client_secret_post",
    timeoutMs: 5_000,
  };
}

// --- against the real provider ---

test.serial(
  "client_credentials with client_secret_basic: scopes sent, response normalized",
  async (t) => {
    const up = client({ idp: basic() });
    const res = await up.clientCredentials("idp", {
      signal: live,
      scopes: ["api:read", "api:write"],
    });
    t.deepEqual(Object.keys(res).sort(), ["accessToken", "expiresInSec", "scopes", "tokenType"]);
    t.is(res.tokenType, "Bearer");
    t.is(res.expiresInSec, 120);
    t.deepEqual(res.scopes, ["api:read", "api:write"]);
    t.is(res.refreshToken, undefined);
    const headers = idp.counters.lastTokenRequestHeaders;
    t.regex(headers?.authorization ?? "", /^Basic /);
    const info = await idp.introspect(res.accessToken);
    t.true(info.active);
    t.is(info.client_id, "tokenvend");
    t.is(info.scope, "api:read api:write");
  },
);

test.serial(
  "client_credentials with client_secret_post sends no Authorization header",
  async (t) => {
    const up = client({ idp: post() });
    const res = await up.clientCredentials("idp", { signal: live, scopes: ["api:write"] });
    t.deepEqual(res.scopes, ["api:write"]);
    t.is(idp.counters.lastTokenRequestHeaders?.authorization, undefined);
    t.is((await idp.introspect(res.accessToken)).client_id, "tokenvend-post");
  },
);

test.serial("client_credentials without scopes sends none and gets none back", async (t) => {
  const up = client({ idp: basic() });
  const res = await up.clientCredentials("idp", { signal: live, scopes: [] });
  t.is(res.scopes, undefined);
  t.true((await idp.introspect(res.accessToken)).active);
});

test.serial("client_credentials sends audience; the token is bound to it", async (t) => {
  const up = client({ idp: basic() });
  const res = await up.clientCredentials("idp", {
    signal: live,
    scopes: ["api:read"],
    audience: "https://orders.example.test",
  });
  const info = await idp.introspect(res.accessToken);
  t.is(info.aud, "https://orders.example.test");
  t.is(info.scope, "api:read");
});

test.serial(
  "a wrong client secret is invalid_client, permanent, and the secret is not in the error",
  async (t) => {
    const secret = "wrong-secret-value-123456";
    for (const authMethod of ["client_secret_basic", "client_secret_post"] as const) {
      const up = client({ idp: { ...basic(), authMethod, clientSecret: secret } });
      const err = await upstreamError(up.clientCredentials("idp", { signal: live }));
      t.true(err.permanent, authMethod);
      t.is(err.oauthError, "invalid_client");
      t.is(err.status, 401);
      t.false(inspect(err, { depth: 10 }).includes(secret));
    }
  },
);

test.serial(
  "refresh returns the rotated refresh token, an ID token, scopes and expiry",
  async (t) => {
    const minted = await idp.mintRefreshToken({ clientId: "tokenvend", accountId: "alice" });
    const up = client({ idp: basic() });
    const res = await up.refresh("idp", { signal: live, refreshToken: minted.refreshToken });
    t.is(res.tokenType, "Bearer");
    t.is(res.expiresInSec, 120);
    t.truthy(res.refreshToken);
    t.not(res.refreshToken, minted.refreshToken);
    t.truthy(res.idToken);
    t.deepEqual(res.scopes, ["openid", "offline_access", "api:read", "api:write"]);
    t.not(res.accessToken, minted.accessToken);
  },
);

test.serial("refresh with narrower scopes asks for them", async (t) => {
  const minted = await idp.mintRefreshToken({
    clientId: "tokenvend",
    accountId: "bob",
    scope: "offline_access api:read api:write",
  });
  const up = client({ idp: basic() });
  const res = await up.refresh("idp", {
    signal: live,
    refreshToken: minted.refreshToken,
    scopes: ["api:read"],
  });
  t.deepEqual(res.scopes, ["api:read"]);
  t.is(res.idToken, undefined);
});

test.serial(
  "a used refresh token is invalid_grant, permanent, without the token in the error",
  async (t) => {
    const minted = await idp.mintRefreshToken({ clientId: "tokenvend", accountId: "carol" });
    const up = client({ idp: basic() });
    await up.refresh("idp", { signal: live, refreshToken: minted.refreshToken });
    const err = await upstreamError(
      up.refresh("idp", { signal: live, refreshToken: minted.refreshToken }),
    );
    t.true(err.permanent);
    t.is(err.oauthError, "invalid_grant");
    t.is(err.status, 400);
    t.is(err.retryAfterMs, undefined);
    const dump = inspect(err, { depth: 10 });
    t.false(dump.includes(minted.refreshToken));
    t.false(dump.includes(basic().clientSecret as string));
  },
);

test.serial(
  "an unknown scope on refresh is invalid_scope: transient, the token is not dead",
  async (t) => {
    const minted = await idp.mintRefreshToken({
      clientId: "tokenvend",
      accountId: "dave",
      scope: "offline_access api:read",
    });
    const up = client({ idp: basic() });
    const err = await upstreamError(
      up.refresh("idp", { signal: live, refreshToken: minted.refreshToken, scopes: ["api:write"] }),
    );
    t.false(err.permanent);
    t.is(err.oauthError, "invalid_scope");
    // The refresh token still works.
    const res = await up.refresh("idp", { signal: live, refreshToken: minted.refreshToken });
    t.truthy(res.refreshToken);
  },
);

test.serial("revoke revokes at the discovered revocation endpoint", async (t) => {
  const minted = await idp.mintRefreshToken({ clientId: "tokenvend", accountId: "erin" });
  const up = client({ idp: basic() });
  const before = idp.counters.revocationRequests;
  await up.revoke("idp", {
    signal: live,
    token: minted.refreshToken,
    tokenTypeHint: "refresh_token",
  });
  t.is(idp.counters.revocationRequests, before + 1);
  t.false((await idp.introspect(minted.refreshToken)).active);
  const err = await upstreamError(
    up.refresh("idp", { signal: live, refreshToken: minted.refreshToken }),
  );
  t.is(err.oauthError, "invalid_grant");
});

test.serial("revoke uses a configured revocationEndpoint without discovery", async (t) => {
  const cfg = basic();
  const up = client({
    idp: {
      ...cfg,
      issuer: undefined,
      tokenEndpoint: idp.tokenEndpoint,
      revocationEndpoint: idp.revocationEndpoint,
    },
  });
  const cc = await up.clientCredentials("idp", { signal: live });
  idp.resetCounters();
  await up.revoke("idp", { signal: live, token: cc.accessToken, tokenTypeHint: "access_token" });
  t.is(idp.counters.discoveryRequests, 0);
  t.is(idp.counters.revocationRequests, 1);
  t.false((await idp.introspect(cc.accessToken)).active);
});

test.serial("revoke without any revocation endpoint fails clearly and sends nothing", async (t) => {
  const up = client({ idp: { ...basic(), issuer: undefined, tokenEndpoint: idp.tokenEndpoint } });
  idp.resetCounters();
  const err = await upstreamError(
    up.revoke("idp", { signal: live, token: "x", tokenTypeHint: "access_token" }),
  );
  t.true(err.permanent);
  t.regex(err.message, /has no revocation endpoint/);
  t.is(idp.counters.revocationRequests, 0);
});

test.serial("discovery is lazy, single-flight and cached", async (t) => {
  idp.resetCounters();
  const up = client({ idp: basic() });
  t.is(idp.counters.discoveryRequests, 0);
  await Promise.all([
    up.clientCredentials("idp", { signal: live }),
    up.clientCredentials("idp", { signal: live }),
    up.clientCredentials("idp", { signal: live }),
  ]);
  await up.clientCredentials("idp", { signal: live });
  t.is(idp.counters.discoveryRequests, 1);
  t.is(idp.counters.tokenRequests.client_credentials, 4);
});

test.serial("a failed discovery is tried again on the next call", async (t) => {
  const up = client({ idp: basic() });
  await idp.stop();
  try {
    const err = await upstreamError(up.clientCredentials("idp", { signal: live }));
    t.false(err.permanent);
    t.is(err.status, undefined);
    t.regex(err.message, /^discovery for provider "idp" failed/);
  } finally {
    await idp.start();
  }
  idp.resetCounters();
  await up.clientCredentials("idp", { signal: live });
  t.is(idp.counters.discoveryRequests, 1);
});

test.serial("an injected fetch sees every request and can add headers", async (t) => {
  const seen: string[] = [];
  const up = client(
    { idp: basic() },
    {
      fetch: (url, init) => {
        seen.push(`${init.method} ${new URL(url).pathname}`);
        const headers = new Headers(init.headers);
        headers.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        return fetch(url, { ...init, headers });
      },
    },
  );
  await up.clientCredentials("idp", { signal: live });
  t.deepEqual(seen, ["GET /.well-known/openid-configuration", "POST /token"]);
  t.is(
    idp.counters.lastTokenRequestHeaders?.traceparent,
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
  );
});

test.serial("the service signal aborts calls", async (t) => {
  const service = new AbortController();
  const up = client({ idp: basic() }, { signal: service.signal });
  await up.clientCredentials("idp", { signal: live });
  service.abort();
  const err = await upstreamError(up.clientCredentials("idp", { signal: live }));
  t.false(err.permanent);
  t.regex(err.message, /was aborted$/);
});

test("an unknown provider is a permanent error", async (t) => {
  const up = client({});
  const err = await upstreamError(up.clientCredentials("nope", { signal: live }));
  t.true(err.permanent);
  t.is(err.message, 'unknown provider "nope"');
});

test("options are checked when the client is built", (t) => {
  const ok: UpstreamProviderConfig = {
    tokenEndpoint: "https://idp.example.com/token",
    clientId: "c",
    clientSecret: "s",
    authMethod: "client_secret_basic",
    timeoutMs: 1000,
  };
  const build = (p: Partial<UpstreamProviderConfig>) => () =>
    client({ acme: { ...ok, ...p } as UpstreamProviderConfig });
  t.notThrows(build({}));
  t.notThrows(build({ tokenEndpoint: "http://127.0.0.1:1/token" }));
  t.notThrows(build({ tokenEndpoint: "http://localhost:1/token" }));
  t.notThrows(build({ tokenEndpoint: "http://[::1]:1/token" }));
  t.notThrows(build({ tokenEndpoint: "http://idp.internal/token", allowInsecureHttp: true }));
  t.notThrows(build({ authMethod: "none", clientSecret: undefined }));
  t.throws(build({ tokenEndpoint: "http://idp.internal/token" }), {
    message:
      "providers.acme.tokenEndpoint: plain http:// is allowed only to loopback hosts unless allowInsecureHttp is set",
  });
  t.throws(build({ tokenEndpoint: "ftp://idp.example.com/token" }), {
    message: "providers.acme.tokenEndpoint must be an http(s) URL; got ftp:",
  });
  t.throws(build({ tokenEndpoint: "token" }), {
    message: "providers.acme.tokenEndpoint must be an absolute URL",
  });
  t.throws(build({ tokenEndpoint: undefined }), {
    message: "providers.acme: set issuer (for discovery) or tokenEndpoint",
  });
  t.throws(build({ clientSecret: undefined }), {
    message: "providers.acme: authMethod client_secret_basic needs clientSecret",
  });
  t.throws(build({ clientSecret: "" }), {
    message: "providers.acme: authMethod client_secret_basic needs clientSecret",
  });
  t.throws(build({ timeoutMs: 0 }), {
    message: "providers.acme.timeoutMs must be a positive number; got 0",
  });
  t.throws(build({ clientId: "" }), { message: "providers.acme.clientId must not be empty" });
});
