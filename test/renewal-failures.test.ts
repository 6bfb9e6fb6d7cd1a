// A session whose refresh token was revoked at the real oidc-provider can no longer be renewed:
// the provider's webhook, a local HTTP server here, receives a signed, timestamped JSON event
// (Standard Webhooks, checked with its library and by hand with HMAC-SHA256), answered 500 the
// first time and delivered again; the failure is logged without token material.

import { createHmac } from "node:crypto";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import test from "ava";
import { Webhook } from "standardwebhooks";
import type { Logger } from "../src/core/logger.ts";
import { createTestMeter, sumOf } from "./support/otel.ts";
import { getValid, grpcFailureDetail, startStack } from "./support/stack.ts";

const secretBytes = Buffer.from("0123456789abcdef0123456789abcdef");
const secret = `whsec_${secretBytes.toString("base64")}`;

interface Received {
  readonly at: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

test("a refresh token revoked at the provider: a signed event, retried after a 500, and a log line", async (t) => {
  const received: Received[] = [];
  const hook = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString("utf8");
    });
    req.on("end", () => {
      received.push({ at: Date.now(), headers: req.headers, body });
      res.writeHead(received.length === 1 ? 500 : 204).end();
    });
  });
  await new Promise<void>((r) => hook.listen(0, "127.0.0.1", r));
  t.teardown(() => hook.close());
  const url = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/tokenvend-events`;
  const logs: Array<{ obj: object; msg: string | undefined }> = [];
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    warn: (obj, msg) => logs.push({ obj, msg }),
    error: (obj, msg) => logs.push({ obj, msg }),
  };
  const meter = createTestMeter();
  const stack = await startStack({
    provider: { webhook: { url, secretEnv: "HOOK_SECRET" } },
    env: { HOOK_SECRET: secret },
    server: { logger, telemetry: { meterProvider: meter.meterProvider } },
  });
  t.teardown(() => stack.stop());

  const minted = await stack.mint("frank");
  await stack.store("hooked", minted, -10);
  await stack.idp.revoke(minted.refreshToken);
  const f = await stack.client.getValidTokens(getValid("hooked")).then(
    () => undefined,
    (e: unknown) => grpcFailureDetail(e),
  );
  t.is(f?.reason, "REFRESH_FAILED");

  for (let i = 0; i < 100 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
  t.is(received.length, 2, "delivered again after the 500");
  const [first, second] = received as [Received, Received];
  t.true(second.at - first.at >= 700, "after a backoff");
  t.is(first.headers["webhook-id"], second.headers["webhook-id"], "the same event both times");
  t.is(first.body, second.body);

  // The library verifies it; so does a plain HMAC-SHA256 over "id.timestamp.body".
  const event = new Webhook(secret).verify(second.body, second.headers as Record<string, string>);
  const id = String(second.headers["webhook-id"]);
  const ts = String(second.headers["webhook-timestamp"]);
  const mac = createHmac("sha256", secretBytes)
    .update(`${id}.${ts}.${second.body}`)
    .digest("base64");
  t.is(second.headers["webhook-signature"], `v1,${mac}`);
  t.true(Math.abs(Number(ts) - Date.now() / 1000) < 10, "timestamped now");
  t.is(second.headers["content-type"], "application/json");
  t.like(event as object, {
    type: "session.renewal_failed",
    session_id: "hooked",
    provider: "idp",
    reason: "REFRESH_FAILED",
    oauth_error: "invalid_grant",
    generation: 1,
  });
  // A tampered body does not verify.
  t.throws(() =>
    new Webhook(secret).verify(
      second.body.replace("hooked", "other"),
      second.headers as Record<string, string>,
    ),
  );

  const rm = await meter.collect();
  const provider = { "tokenvend.provider": "idp" };
  t.is(
    sumOf(rm, "tokenvend.renewal.failures", {
      ...provider,
      "tokenvend.failure.reason": "REFRESH_FAILED",
    }),
    1,
  );
  t.is(
    sumOf(rm, "tokenvend.webhook.deliveries", {
      ...provider,
      "tokenvend.webhook.outcome": "retry",
    }),
    1,
  );
  t.is(
    sumOf(rm, "tokenvend.webhook.deliveries", {
      ...provider,
      "tokenvend.webhook.outcome": "delivered",
    }),
    1,
  );

  const logged = logs.find((l) => l.msg === "session can no longer be renewed");
  t.like(logged?.obj as object, {
    provider: "idp",
    reason: "REFRESH_FAILED",
    oauthError: "invalid_grant",
  });
  const text = JSON.stringify(logs);
  t.false(text.includes(minted.refreshToken));
  t.false(text.includes(minted.accessToken));
  t.false(text.includes(secretBytes.toString("base64")));
});
