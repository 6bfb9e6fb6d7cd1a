// The authorization code flow with PKCE run by tokenvend against the real oidc-provider, its
// login and consent pages driven by a test browser: the tokens are stored as the session's
// generation and never handed out by CompleteAuthorization; a state is one use, expires, and
// must come with an allowed redirect URI; PKCE stops a code injected into another login; a
// refusal reaches the caller as the provider's OAuth error.

import { create } from "@bufbuild/protobuf";
import test from "ava";
import {
  CompleteAuthorizationRequestSchema,
  StartAuthorizationRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { createBrowser } from "./support/browser.ts";
import { getValid, grpcFailureDetail, type Stack, startStack } from "./support/stack.ts";

const redirectUri = "http://127.0.0.1:3000/callback";
let stack: Stack;

test.before(async () => {
  stack = await startStack({
    provider: { redirectUris: [redirectUri, "http://127.0.0.1:3000/other"] },
  });
});
test.after.always(async () => {
  await stack?.stop();
});

const start = (sessionId: string, extra: Record<string, unknown> = {}) =>
  stack.client.startAuthorization(
    create(StartAuthorizationRequestSchema, { sessionId, provider: "idp", redirectUri, ...extra }),
  );

const complete = (req: Parameters<typeof create<typeof CompleteAuthorizationRequestSchema>>[1]) =>
  stack.client.completeAuthorization(create(CompleteAuthorizationRequestSchema, req));

const failure = async (p: Promise<unknown>) =>
  grpcFailureDetail(
    await p.then(
      () => undefined,
      (e: unknown) => e,
    ),
  );

test("a login stores the session's tokens: generation, scopes and subject come back, no token", async (t) => {
  const started = await start("bff-1", { loginHint: "alice" });
  const url = new URL(started.authorizationUrl);
  t.is(url.origin, stack.idp.issuer);
  t.is(url.searchParams.get("code_challenge_method"), "S256");
  t.is(url.searchParams.get("state"), started.state);
  t.is(url.searchParams.get("redirect_uri"), redirectUri);
  t.is(url.searchParams.get("login_hint"), "alice");
  t.truthy(url.searchParams.get("nonce"));
  t.deepEqual(url.searchParams.get("scope")?.split(" "), ["openid", "offline_access"]);
  t.false(started.authorizationUrl.includes("code_verifier"));

  const callback = await createBrowser().login(started.authorizationUrl, {
    accountId: "alice",
    redirectUri,
  });
  const done = await complete({ response: { case: "callbackUrl", value: callback } });
  t.is(done.sessionId, "bff-1");
  t.is(done.provider, "idp");
  t.is(done.generation, 1n);
  t.is(done.subject, "alice");
  t.true(done.scopes.includes("openid"));

  const cred = (
    await stack.client.getValidTokens(getValid("bff-1", "idp", { expectedSubject: "alice" }))
  ).credential;
  t.is(cred?.generation, 1n);
  const info = await stack.idp.introspect(cred?.accessToken ?? "");
  t.true(info.active);
  t.is(info.sub, "alice");
  // The answer to CompleteAuthorization carries neither token.
  const wire = JSON.stringify(done, (_k, v) => (typeof v === "bigint" ? String(v) : v));
  t.false(wire.includes(cred?.accessToken ?? "-"));
  t.is(cred?.idToken.split(".").length, 3);
});

test("the code alone (no callback URL) completes too, the state naming the login", async (t) => {
  const started = await start("bff-code");
  const callback = new URL(
    await createBrowser().login(started.authorizationUrl, { accountId: "bob", redirectUri }),
  );
  const done = await complete({
    state: started.state,
    response: { case: "code", value: callback.searchParams.get("code") ?? "" },
  });
  t.is(done.subject, "bob");
  t.is(done.generation, 1n);
});

test("a state completes once: a replay is FAILED_PRECONDITION / INVALID_STATE", async (t) => {
  const started = await start("bff-replay");
  const callback = await createBrowser().login(started.authorizationUrl, { redirectUri });
  await complete({ response: { case: "callbackUrl", value: callback } });
  const again = await failure(complete({ response: { case: "callbackUrl", value: callback } }));
  t.is(again.code, 9);
  t.is(again.reason, "INVALID_STATE");
  t.regex(again.message, /already used/);
});

test("concurrent completions of one state: exactly one wins", async (t) => {
  const started = await start("bff-race");
  const callback = await createBrowser().login(started.authorizationUrl, { redirectUri });
  const results = await Promise.allSettled(
    Array.from({ length: 5 }, () =>
      complete({ response: { case: "callbackUrl", value: callback } }),
    ),
  );
  t.is(results.filter((r) => r.status === "fulfilled").length, 1);
  for (const r of results) {
    if (r.status === "rejected") t.is(grpcFailureDetail(r.reason).reason, "INVALID_STATE");
  }
});

test("an unknown state is INVALID_STATE; an expired one too, saying so", async (t) => {
  const unknown = await failure(
    complete({ state: "no-such-state", response: { case: "code", value: "x" } }),
  );
  t.is(unknown.reason, "INVALID_STATE");
  t.regex(unknown.message, /unknown/);

  // A replica of its own whose states live 1 s: the login takes about that long already, so
  // the state is past its life by the time it is completed, however loaded the machine.
  const short = await startStack({
    idp: stack.idp,
    provider: { redirectUris: [redirectUri] },
    config: { authorizationStateTtl: "1s" },
  });
  t.teardown(() => short.stop());
  const started = await short.client.startAuthorization(
    create(StartAuthorizationRequestSchema, {
      sessionId: "bff-expired",
      provider: "idp",
      redirectUri,
    }),
  );
  const callback = await createBrowser().login(started.authorizationUrl, { redirectUri });
  await new Promise((r) => setTimeout(r, 1_100));
  const expired = await failure(
    short.client.completeAuthorization(
      create(CompleteAuthorizationRequestSchema, {
        response: { case: "callbackUrl", value: callback },
      }),
    ),
  );
  t.is(expired.code, 9);
  t.is(expired.reason, "INVALID_STATE");
  t.regex(expired.message, /expired/);
});

test("a redirect URI off the provider's allow-list is INVALID_ARGUMENT naming redirect_uri", async (t) => {
  for (const uri of [
    "http://127.0.0.1:3000/evil",
    "https://attacker.example/callback",
    "not a url",
  ]) {
    const f = await failure(start("bff-redirect", { redirectUri: uri }));
    t.is(f.code, 3, uri);
    t.deepEqual(f.fields, ["redirect_uri"], uri);
  }
  const other = await start("bff-redirect", { redirectUri: "http://127.0.0.1:3000/other" });
  t.truthy(other.state);
});

test("a callback that is not the login's redirect URI is refused", async (t) => {
  const started = await start("bff-mixup");
  const callback = new URL(await createBrowser().login(started.authorizationUrl, { redirectUri }));
  callback.pathname = "/other";
  const f = await failure(complete({ response: { case: "callbackUrl", value: callback.href } }));
  t.is(f.code, 3);
  t.deepEqual(f.fields, ["callback_url"]);
});

test("PKCE: a code from another login redeemed with this state's verifier is refused (invalid_grant)", async (t) => {
  const victim = await start("bff-victim");
  const attacker = await start("bff-attacker");
  const injected = new URL(
    await createBrowser().login(attacker.authorizationUrl, { accountId: "mallory", redirectUri }),
  );
  const f = await failure(
    complete({
      state: victim.state,
      response: { case: "code", value: injected.searchParams.get("code") ?? "" },
    }),
  );
  t.is(f.code, 9);
  t.is(f.reason, "AUTHORIZATION_FAILED");
  t.is(f.metadata.oauth_error, "invalid_grant");
  const none = await failure(stack.client.getValidTokens(getValid("bff-victim")));
  t.is(none.reason, "SESSION_NOT_FOUND");
});

test("a user who refuses: AUTHORIZATION_FAILED with oauth_error access_denied, nothing stored", async (t) => {
  const started = await start("bff-denied");
  const callback = await createBrowser().login(started.authorizationUrl, {
    deny: true,
    redirectUri,
  });
  t.is(new URL(callback).searchParams.get("error"), "access_denied");
  const f = await failure(complete({ response: { case: "callbackUrl", value: callback } }));
  t.is(f.code, 9);
  t.is(f.reason, "AUTHORIZATION_FAILED");
  t.is(f.metadata.oauth_error, "access_denied");
  const none = await failure(stack.client.getValidTokens(getValid("bff-denied")));
  t.is(none.reason, "SESSION_NOT_FOUND");
});

test("bad requests are INVALID_ARGUMENT with the fields named; unknown provider NOT_FOUND", async (t) => {
  const f = await failure(
    stack.client.startAuthorization(create(StartAuthorizationRequestSchema, { provider: "idp" })),
  );
  t.is(f.code, 3);
  t.deepEqual(f.fields.sort(), ["redirect_uri", "session_id"]);
  const c = await failure(complete({}));
  t.deepEqual(c.fields.sort(), ["response", "state"]);
  const p = await failure(
    stack.client.startAuthorization(
      create(StartAuthorizationRequestSchema, { sessionId: "s", provider: "nope", redirectUri }),
    ),
  );
  t.is(p.code, 5);
  t.is(p.reason, "PROVIDER_NOT_FOUND");
});

test("the refreshed session keeps the login's binding (subject and client)", async (t) => {
  const started = await start("bff-refresh");
  const callback = await createBrowser().login(started.authorizationUrl, {
    accountId: "carol",
    redirectUri,
  });
  await complete({ response: { case: "callbackUrl", value: callback } });
  const refreshed = await stack.client.getValidTokens(
    getValid("bff-refresh", "idp", {
      minValiditySeconds: 3600,
      expectedSubject: "carol",
      expectedClientId: "tokenvend",
    }),
  );
  t.is(refreshed.credential?.generation, 2n);
  const wrong = await failure(
    stack.client.getValidTokens(getValid("bff-refresh", "idp", { expectedSubject: "mallory" })),
  );
  t.is(wrong.reason, "INVALID_BINDING");
});

test("the flows are served on the Connect listener too (JSON over HTTP/1.1)", async (t) => {
  const post = (method: string, body: unknown) =>
    fetch(`${stack.httpUrl}/tokenvend.v1.TokenService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const started = await post("StartAuthorization", {
    sessionId: "bff-connect",
    provider: "idp",
    redirectUri,
  });
  t.is(started.status, 200);
  const body = (await started.json()) as { authorizationUrl: string; state: string };
  t.true(body.authorizationUrl.startsWith(stack.idp.issuer));
  const bad = await post("CompleteAuthorization", { state: "nope", code: "x" });
  const err = (await bad.json()) as { code: string };
  t.is(err.code, "failed_precondition");
});
