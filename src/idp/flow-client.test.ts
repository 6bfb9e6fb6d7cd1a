// The flow client's checks of what comes back from the real oidc-provider: the ID token's
// nonce and its signature against the provider's JWKS (a token whose signature was altered on
// the way, through the injected fetch, is refused), and the callback's state.

import test from "ava";
import { createBrowser } from "../../test/support/browser.ts";
import { UpstreamError } from "../core/upstream.ts";
import { type LocalIdp, startLocalIdp } from "../dev/local-idp.ts";
import { createFlowClient } from "./flow-client.ts";
import type { FetchLike } from "./provider-state.ts";
import { createProviderStates } from "./upstream-client.ts";

const redirectUri = "http://127.0.0.1:3000/callback";
const live = new AbortController().signal;
let idp: LocalIdp;
test.before(async () => {
  idp = await startLocalIdp();
});
test.after.always(async () => {
  await idp?.stop();
});

function client(fetchImpl?: FetchLike) {
  const c = idp.client("tokenvend");
  const states = createProviderStates({
    maxResponseBytes: 64 * 1024,
    providers: new Map([
      [
        "idp",
        {
          issuer: idp.issuer,
          clientId: c.clientId,
          clientSecret: c.clientSecret,
          authMethod: "client_secret_basic" as const,
          timeoutMs: 5_000,
        },
      ],
    ]),
    ...(fetchImpl !== undefined ? { fetch: fetchImpl } : {}),
  });
  return createFlowClient(states);
}

/** A login at the IdP: the request's secrets and the callback's parameters. */
async function login(flows: ReturnType<typeof client>) {
  const req = await flows.authorizationRequest("idp", {
    signal: live,
    redirectUri,
    scopes: ["openid", "offline_access"],
  });
  const callback = new URL(await createBrowser().login(req.url, { redirectUri }));
  return { req, callback: callback.searchParams };
}

const redeem = (
  flows: ReturnType<typeof client>,
  l: Awaited<ReturnType<typeof login>>,
  over: { nonce?: string; state?: string } = {},
) =>
  flows.redeemCode("idp", {
    signal: live,
    callback: l.callback,
    state: over.state ?? l.req.state,
    redirectUri,
    codeVerifier: l.req.codeVerifier,
    nonce: over.nonce ?? l.req.nonce,
    codeOnly: false,
  });

test("a login's ID token is checked and its subject returned, with a refresh token", async (t) => {
  const flows = client();
  const res = await redeem(flows, await login(flows));
  t.is(res.subject, "alice");
  t.truthy(res.refreshToken);
  t.is(res.idToken?.split(".").length, 3);
});

test("an ID token whose signature was altered on the way is refused", async (t) => {
  const tamper: FetchLike = async (url, init) => {
    const res = await fetch(url, init);
    if (!url.endsWith("/token")) return res;
    const body = (await res.json()) as { id_token?: string };
    if (body.id_token !== undefined) {
      const [h, p, s] = body.id_token.split(".") as [string, string, string];
      body.id_token = `${h}.${p}.${s.startsWith("A") ? "B" : "A"}${s.slice(1)}`;
    }
    return new Response(JSON.stringify(body), { status: res.status, headers: res.headers });
  };
  const flows = client(tamper);
  const err = await redeem(flows, await login(flows)).catch((e: unknown) => e);
  t.true(err instanceof UpstreamError);
  t.regex((err as Error).message, /signature/i);
});

test("an ID token without the nonce of the request is refused", async (t) => {
  const flows = client();
  const err = await redeem(flows, await login(flows), { nonce: "another-nonce" }).catch(
    (e: unknown) => e,
  );
  t.true(err instanceof UpstreamError);
  t.regex((err as Error).message, /nonce/);
});

test("a callback whose state is not the request's is refused before any token request", async (t) => {
  const flows = client();
  const l = await login(flows);
  idp.resetCounters();
  const err = await redeem(flows, l, { state: "other" }).catch((e: unknown) => e);
  t.true(err instanceof UpstreamError);
  t.is((err as UpstreamError).oauthError, "invalid_request");
  t.is(idp.counters.tokenRequests.authorization_code, undefined);
});
