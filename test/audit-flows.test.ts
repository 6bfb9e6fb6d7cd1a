// The flows' provider calls that obtain tokens are in the audit stream like refreshes are: a
// login (authorization code redeemed) and a token exchange, each with its provider and outcome,
// and no token material.

import { readFile } from "node:fs/promises";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import test from "ava";
import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import { startAuthStack } from "./support/auth-stack.ts";
import { createBrowser } from "./support/browser.ts";

const redirectUri = "http://127.0.0.1:3000/callback";

test("a login and a token exchange are audited with their provider and outcome, without tokens", async (t) => {
  const s = await startAuthStack({
    provider: { redirectUris: [redirectUri], tokenExchange: true },
  });
  t.teardown(s.stop);
  const c = createClient(TokenService, createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }));
  const headers = { authorization: await s.bearer("apps", "alice") };
  const started = await c.startAuthorization(
    { sessionId: "s-login", provider: "idp", redirectUri },
    { headers },
  );
  const callback = await createBrowser().login(started.authorizationUrl, {
    accountId: "alice",
    redirectUri,
  });
  await c.completeAuthorization(
    { response: { case: "callbackUrl", value: callback } },
    { headers },
  );
  const exchanged = await c.exchangeToken(
    {
      target: {
        subject: { case: "session", value: { sessionId: "s-login", provider: "idp" } },
        audience: "https://orders.example.test",
      },
    },
    { headers },
  );
  const events = (await s.auditRecords()).filter(
    (r) => r.event === "login" || r.event === "exchange",
  );
  t.deepEqual(
    events.map(({ time, ...r }) => r),
    [
      {
        audit: true,
        event: "login",
        provider: "idp",
        outcome: "OK",
        details: { grantType: "authorization_code" },
      },
      {
        audit: true,
        event: "exchange",
        provider: "idp",
        outcome: "OK",
        details: { grantType: "token_exchange" },
      },
    ],
  );
  const text = await readFile(s.auditFile, "utf8");
  const access = exchanged.credential?.accessToken ?? "";
  t.true(access.length > 0);
  t.false(text.includes(access));
  t.false(text.includes(new URL(callback).searchParams.get("code") ?? "-"));
});
