// The upstream client against the real oidc-provider (src/dev/local-idp.ts),
// and against a tiny HTTP stub only for faults a real provider cannot be made
// to show: 5xx, 429/503 with Retry-After, a hanging server, broken JSON.

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import test from "ava";
import { UpstreamError } from "../core/upstream.ts";
import { type LocalIdp, startLocalIdp } from "../dev/local-idp.ts";
import { parseRetryAfterMs } from "./retry-after.ts";
import {
  createUpstreamClient,
  type UpstreamClientOptions,
  type UpstreamProviderConfig,
} from "./upstream-client.ts";

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

function client(
  providers: Record<string, UpstreamProviderConfig>,
  extra: Omit<UpstreamClientOptions, "providers"> = {},
) {
  return createUpstreamClient({ providers: new Map(Object.entries(providers)), ...extra });
}

async function upstreamError(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof UpstreamError)) {
    throw new Error(`expected an UpstreamError, got ${inspect(err)}`);
  }
  return err;
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

// --- faults, from a stub ---

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

async function stub(handler: Handler) {
  const requests: { path: string; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString();
    });
    req.on("end", () => {
      requests.push({ path: req.url ?? "", body });
      handler(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    tokenEndpoint: `http://127.0.0.1:${port}/token`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function stubConfig(tokenEndpoint: string, timeoutMs = 2_000): UpstreamProviderConfig {
  return {
    tokenEndpoint,
    revocationEndpoint: tokenEndpoint.replace(/\/token$/, "/revoke"),
    clientId: "stub-client",
    clientSecret: "stub-secret-0123456789",
    authMethod: "client_secret_post",
    timeoutMs,
  };
}

async function faultOf(
  handler: Handler,
  call: "refresh" | "clientCredentials" | "revoke" = "refresh",
  extra: Omit<UpstreamClientOptions, "providers"> = {},
  timeoutMs?: number,
) {
  const s = await stub(handler);
  try {
    const up = client({ stub: stubConfig(s.tokenEndpoint, timeoutMs) }, extra);
    const p =
      call === "refresh"
        ? up.refresh("stub", { signal: live, refreshToken: "rt-secret-abcdef" })
        : call === "revoke"
          ? up.revoke("stub", {
              signal: live,
              token: "rt-secret-abcdef",
              tokenTypeHint: "refresh_token",
            })
          : up.clientCredentials("stub", { signal: live });
    return { err: await upstreamError(p), requests: s.requests };
  } finally {
    await s.close();
  }
}

test("500 with an HTML body is transient and carries the status", async (t) => {
  const { err } = await faultOf((_req, res) => {
    res.writeHead(500, { "content-type": "text/html" }).end("<h1>rt-secret-abcdef</h1>");
  });
  t.false(err.permanent);
  t.is(err.status, 500);
  t.is(err.oauthError, undefined);
  t.is(err.retryAfterMs, undefined);
  t.false(inspect(err, { depth: 10 }).includes("rt-secret-abcdef"));
});

test("503 with Retry-After in seconds", async (t) => {
  const { err } = await faultOf((_req, res) => {
    res.writeHead(503, { "retry-after": "7" }).end();
  });
  t.false(err.permanent);
  t.is(err.status, 503);
  t.is(err.retryAfterMs, 7_000);
});

test("429 with Retry-After as an HTTP-date, against the injected clock", async (t) => {
  const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
  const { err } = await faultOf(
    (_req, res) => {
      res.writeHead(429, { "retry-after": "Wed, 21 Oct 2015 07:28:30 GMT" }).end();
    },
    "clientCredentials",
    { now: () => now },
  );
  t.false(err.permanent);
  t.is(err.status, 429);
  t.is(err.retryAfterMs, 30_000);
});

test("429 with an OAuth error body keeps the code and the Retry-After", async (t) => {
  const { err } = await faultOf((_req, res) => {
    res
      .writeHead(429, { "content-type": "application/json", "retry-after": "2" })
      .end(JSON.stringify({ error: "slow_down", error_description: "too many requests" }));
  });
  t.false(err.permanent);
  t.is(err.oauthError, "slow_down");
  t.is(err.retryAfterMs, 2_000);
  t.regex(err.message, /HTTP 429 slow_down: too many requests$/);
});

test("502 ignores Retry-After (only 429 and 503 carry it)", async (t) => {
  const { err } = await faultOf((_req, res) => {
    res.writeHead(502, { "retry-after": "9" }).end();
  });
  t.is(err.status, 502);
  t.is(err.retryAfterMs, undefined);
});

test("a hanging server times out", async (t) => {
  const started = performance.now();
  const { err } = await faultOf(() => {}, "refresh", {}, 200);
  t.false(err.permanent);
  t.is(err.status, undefined);
  t.regex(err.message, /timed out after 200 ms$/);
  t.true(performance.now() - started < 2_000);
});

test("a body that stalls after the headers times out", async (t) => {
  const { err } = await faultOf(
    (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"access_token":');
    },
    "refresh",
    {},
    200,
  );
  t.false(err.permanent);
  t.regex(err.message, /timed out after 200 ms$/);
});

test("a revocation endpoint that hangs times out too", async (t) => {
  const { err } = await faultOf(() => {}, "revoke", {}, 200);
  t.regex(err.message, /^revocation at provider "stub" timed out after 200 ms$/);
});

test("garbage JSON with 200 is transient", async (t) => {
  const { err } = await faultOf((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" }).end("{not json");
  });
  t.false(err.permanent);
  t.is(err.status, 200);
  t.regex(err.message, /failed to parse "response" body as JSON/);
});

test("a 200 without access_token is transient and the body is not in the error", async (t) => {
  const { err } = await faultOf((_req, res) => {
    res
      .writeHead(200, { "content-type": "application/json" })
      .end(JSON.stringify({ refresh_token: "rotated-secret-xyz", token_type: "Bearer" }));
  });
  t.false(err.permanent);
  t.is(err.status, 200);
  t.false(inspect(err, { depth: 10 }).includes("rotated-secret-xyz"));
});

test("an error_description that echoes the token or the secret is redacted", async (t) => {
  const { err } = await faultOf((_req, res) => {
    res.writeHead(400, { "content-type": "application/json" }).end(
      JSON.stringify({
        error: "invalid_grant",
        error_description: "token rt-secret-abcdef of client stub-secret-0123456789\nunknown",
      }),
    );
  });
  t.true(err.permanent);
  t.is(
    err.message,
    'refresh_token grant at provider "stub" failed: HTTP 400 invalid_grant: token [redacted] of client [redacted] unknown',
  );
  const dump = inspect(err, { depth: 10 });
  t.false(dump.includes("rt-secret-abcdef"));
  t.false(dump.includes("stub-secret-0123456789"));
});

test("unauthorized_client is permanent; invalid_request is not", async (t) => {
  const respond =
    (error: string): Handler =>
    (_req, res) => {
      res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error }));
    };
  t.true((await faultOf(respond("unauthorized_client"))).err.permanent);
  t.false((await faultOf(respond("invalid_request"))).err.permanent);
  t.false((await faultOf(respond("temporarily_unavailable"))).err.permanent);
});

test("the request carries the grant, the token and the post credentials", async (t) => {
  const { requests } = await faultOf((_req, res) => {
    res.writeHead(503).end();
  });
  const body = new URLSearchParams(requests[0]?.body);
  t.is(body.get("grant_type"), "refresh_token");
  t.is(body.get("refresh_token"), "rt-secret-abcdef");
  t.is(body.get("client_id"), "stub-client");
  t.is(body.get("client_secret"), "stub-secret-0123456789");
});

test("connection refused is transient with no status", async (t) => {
  const s = await stub(() => {});
  await s.close();
  const up = client({ stub: stubConfig(s.tokenEndpoint) });
  const err = await upstreamError(up.clientCredentials("stub", { signal: live }));
  t.false(err.permanent);
  t.is(err.status, undefined);
  t.regex(err.message, /ECONNREFUSED/);
});

test("an already aborted call sends nothing", async (t) => {
  const s = await stub((_req, res) => {
    res.writeHead(500).end();
  });
  try {
    const up = client({ stub: stubConfig(s.tokenEndpoint) });
    const err = await upstreamError(up.clientCredentials("stub", { signal: AbortSignal.abort() }));
    t.regex(err.message, /was aborted$/);
    t.is(s.requests.length, 0);
  } finally {
    await s.close();
  }
});

// --- Retry-After parsing ---

test("parseRetryAfterMs", (t) => {
  const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
  t.is(parseRetryAfterMs("0", now), 0);
  t.is(parseRetryAfterMs("120", now), 120_000);
  t.is(parseRetryAfterMs(" 5 ", now), 5_000);
  t.is(parseRetryAfterMs("Wed, 21 Oct 2015 07:29:00 GMT", now), 60_000);
  t.is(parseRetryAfterMs("Wednesday, 21-Oct-15 07:29:00 GMT", now), 60_000);
  t.is(parseRetryAfterMs("Wed Oct 21 07:29:00 2015", now) !== undefined, true);
  t.is(parseRetryAfterMs("Wed, 21 Oct 2015 07:27:00 GMT", now), 0, "a past date means now");
  t.is(parseRetryAfterMs(null, now), undefined);
  t.is(parseRetryAfterMs(undefined, now), undefined);
  t.is(parseRetryAfterMs("", now), undefined);
  t.is(parseRetryAfterMs("-1", now), undefined);
  t.is(parseRetryAfterMs("1.5", now), undefined);
  t.is(parseRetryAfterMs("soon", now), undefined);
  t.is(parseRetryAfterMs("Wed, 99 Foo 2015 07:29:00 GMT", now), undefined);
  t.is(parseRetryAfterMs("9".repeat(400), now), undefined);
});
