// A provider's token response is read with a size cap and checked like a stored token: a real
// local HTTP server answers oversized (declared and undeclared), endless and malformed bodies,
// and each fails that one request cleanly (a transient UpstreamError, UNAVAILABLE on the wire
// with ErrorInfo), never crashes the replica and never puts the body in a message or a log.

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import test from "ava";
import type { UpstreamProviderConfig } from "../src/idp/upstream-client.ts";
import { getValid, grpcFailureDetail, startStack } from "./support/stack.ts";
import { client, responseCap, upstreamError } from "./support/upstream-calls.ts";

const live = new AbortController().signal;
/** In every body a provider sends here; never in an error or a log line. */
const marker = "BODY-MARKER-5f2c";

type Answer = (req: IncomingMessage, res: ServerResponse) => void;

async function provider(answer: Answer) {
  let requests = 0;
  let droppedEarly: () => void = () => {};
  /** Settles when a response's connection closed before the response was finished. */
  const dropped = new Promise<void>((resolve) => {
    droppedEarly = resolve;
  });
  const server = createServer((req, res) => {
    requests++;
    res.on("close", () => {
      if (!res.writableFinished) droppedEarly();
    });
    req.resume();
    req.on("end", () => answer(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    tokenEndpoint: `http://127.0.0.1:${port}/token`,
    requests: () => requests,
    dropped,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const config = (tokenEndpoint: string): UpstreamProviderConfig => ({
  tokenEndpoint,
  clientId: "cap-client",
  clientSecret: "cap-secret-0123456789",
  authMethod: "client_secret_post",
  timeoutMs: 5_000,
});

const json = (res: ServerResponse, body: unknown, declare = true) => {
  const text = JSON.stringify(body);
  res.writeHead(200, {
    "content-type": "application/json",
    ...(declare ? { "content-length": Buffer.byteLength(text) } : {}),
  });
  res.end(text);
};

const goodToken = { access_token: `at-${marker}`, token_type: "Bearer", expires_in: 300 };
const padded = (bytes: number) => ({ ...goodToken, padding: `${marker}${"x".repeat(bytes)}` });

async function refreshAgainst(answer: Answer, maxResponseBytes = responseCap) {
  const p = await provider(answer);
  try {
    const up = client({ p: config(p.tokenEndpoint) }, { maxResponseBytes });
    const out = up.refresh("p", { signal: live, refreshToken: "rt-cap-secret" });
    return {
      out,
      p,
      settled: await out.then(
        () => undefined,
        (e: unknown) => e,
      ),
    };
  } finally {
    await p.close();
  }
}

function assertClean(t: import("ava").ExecutionContext, err: unknown) {
  t.false(inspect(err, { depth: 10 }).includes(marker), "the body is nowhere in the error");
  t.false(inspect(err, { depth: 10 }).includes("rt-cap-secret"));
}

test("a response declaring a length over the cap is refused before its body is read", async (t) => {
  const { out, p } = await refreshAgainst((_req, res) => json(res, padded(2 * responseCap)));
  const err = await upstreamError(out);
  t.false(err.permanent);
  t.regex(
    err.message,
    /^refresh_token grant at provider "p" failed: HTTP 200: the response is larger than 65536 bytes/,
  );
  t.is(p.requests(), 1);
  assertClean(t, err);
});

test("a chunked response with no length is cut off at the cap and the connection dropped", async (t) => {
  let sent = 0;
  const p = await provider((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write(`{"access_token":"${marker}","token_type":"Bearer","padding":"`);
    // An endless body: written until the client goes away.
    const timer = setInterval(() => {
      if (res.destroyed || sent > 64 * 1024 * 1024) return clearInterval(timer);
      res.write("y".repeat(16 * 1024));
      sent += 16 * 1024;
    }, 1);
  });
  try {
    const up = client({ p: config(p.tokenEndpoint) });
    const err = await upstreamError(
      up.refresh("p", { signal: live, refreshToken: "rt-cap-secret" }),
    );
    t.false(err.permanent);
    t.regex(err.message, /the response is larger than 65536 bytes/);
    assertClean(t, err);
    // The client hung up on the endless body; nothing else would end it.
    await p.dropped;
    t.true(sent < 8 * 1024 * 1024, `the client stopped reading early (${sent} bytes sent)`);
  } finally {
    await p.close();
  }
});

test("the cap is the configured number: just under it succeeds, just over it fails", async (t) => {
  const body = JSON.stringify(padded(3_000));
  const size = Buffer.byteLength(body);
  const answer: Answer = (_req, res) => json(res, JSON.parse(body), false);
  const ok = await refreshAgainst(answer, size);
  t.is(ok.settled, undefined);
  t.is((await ok.out).accessToken, `at-${marker}`);
  const over = await refreshAgainst(answer, size - 1);
  const err = await upstreamError(over.out);
  t.regex(err.message, new RegExp(`larger than ${size - 1} bytes`));
});

const malformed: [string, Record<string, unknown>, RegExp][] = [
  [
    "an access token with a space",
    { ...goodToken, access_token: `a ${marker}` },
    /access_token must be printable ASCII/,
  ],
  [
    "an access token over 16,384 characters",
    { ...goodToken, access_token: marker + "a".repeat(16_384) },
    /access_token longer than 16384/,
  ],
  [
    "a refresh token with a control character",
    { ...goodToken, refresh_token: `r\u0001${marker}` },
    /refresh_token must be printable ASCII/,
  ],
  [
    "more than 100 scopes",
    { ...goodToken, scope: Array.from({ length: 101 }, (_, n) => `s${n}${marker}`).join(" ") },
    /scope has more than 100 scopes/,
  ],
  ["a scope with a quote", { ...goodToken, scope: `read "${marker}` }, /scope: each must be 1–256/],
  [
    "a lifetime of ten years",
    { ...goodToken, expires_in: 315_360_000 },
    /expires_in must be 0 to 31622400 seconds/,
  ],
];

for (const [what, body, rule] of malformed) {
  test(`a token response with ${what} fails the refresh, naming the rule and not the value`, async (t) => {
    const { out } = await refreshAgainst((_req, res) => json(res, body));
    const err = await upstreamError(out);
    t.false(err.permanent);
    t.regex(err.message, /the provider's token response is malformed/);
    t.regex(err.message, rule);
    assertClean(t, err);
  });
}

test("through the wire: an oversized answer to a caller's refresh is UNAVAILABLE with ErrorInfo, logged without the body, and the replica keeps serving", async (t) => {
  const p = await provider((_req, res) => json(res, padded(200_000)));
  const lines: string[] = [];
  const record = (level: string) => (obj: object, msg?: string) =>
    lines.push(`${level} ${msg ?? ""} ${inspect(obj, { depth: 10 })}`);
  const stack = await startStack({
    providers: {
      stub: {
        tokenEndpoint: p.tokenEndpoint,
        clientId: "cap-client",
        clientSecretEnv: "STUB_SECRET",
        authMethod: "client_secret_post",
        timeout: "2s",
        backoff: { initial: "10s", max: "20s", jitter: 0 },
      },
    },
    env: { STUB_SECRET: "cap-secret-0123456789" },
    server: {
      logger: {
        debug: record("debug"),
        info: record("info"),
        warn: record("warn"),
        error: record("error"),
      },
    },
  });
  try {
    const minted = await stack.mint();
    await stack.store("cap-session", minted, 1, { provider: "stub" });
    const err = await stack.client.getValidTokens(getValid("cap-session", "stub")).then(
      () => t.fail("the refresh must fail"),
      (e: unknown) => grpcFailureDetail(e),
    );
    t.like(err, { code: 14, reason: "UPSTREAM_UNAVAILABLE" });
    t.false(err.message.includes(marker));
    t.true(
      lines.some((l) => l.includes("the response is larger than 65536 bytes")),
      "the failure is logged, by its size",
    );
    t.true(p.requests() >= 1);
    t.false(
      lines.some((l) => l.includes(marker)),
      "no log line holds the body",
    );
    // Still serving: another session on the real IdP works on the same replica.
    await stack.store("ok-session", await stack.mint("bob"), 300);
    const ok = await stack.client.getValidTokens(getValid("ok-session"));
    t.truthy(ok.credential?.accessToken);
  } finally {
    await stack.stop();
    await p.close();
  }
});
