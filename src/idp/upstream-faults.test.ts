// The upstream client against a tiny HTTP stub, only for faults a real
// provider cannot be made to show: 5xx, 429/503 with Retry-After, a hanging
// server, broken JSON, secrets echoed back, refused connections.

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import test from "ava";
import { type ClientExtra, client, upstreamError } from "../../test/support/upstream-calls.ts";
import type { UpstreamProviderConfig } from "./upstream-client.ts";

const live = new AbortController().signal;

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
  extra: ClientExtra = {},
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
