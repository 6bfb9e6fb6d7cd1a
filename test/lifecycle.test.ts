// The token lifecycle on one node, end to end: real server, real oidc-provider,
// real @grpc/grpc-js client.

import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import test from "ava";
import {
  GetAllUpstreamCredentialsRequestSchema,
  GetTokenRequestSchema,
  RenewalReason,
  RevokeSessionRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { sessionKey } from "../src/core/token.ts";
import { UpstreamError } from "../src/core/upstream.ts";
import { createUpstreamClient } from "../src/idp/upstream-client.ts";
import { getValid, grpcFailure, startStack } from "./support/stack.ts";

const refreshCount = (s: {
  idp: { counters: { tokenRequests: Readonly<Record<string, number>> } };
}) => s.idp.counters.tokenRequests.refresh_token ?? 0;

test("GetToken gets a client-credentials token once, then serves it from memory", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const first = await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" }));
  t.truthy(first.credential?.accessToken);
  t.is(first.credential?.generation, 1n);
  t.deepEqual(first.credential?.scopes, ["api:read"]);
  const introspected = await s.idp.introspect(first.credential!.accessToken);
  t.true(introspected.active);
  t.is(introspected.aud, "https://api.example.test");
  const second = await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" }));
  t.is(second.credential?.accessToken, first.credential?.accessToken);
  t.is(s.idp.counters.tokenRequests.client_credentials, 1);
  // client_secret_post grant works the same way.
  const post = await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo-post" }));
  t.truthy(post.credential?.accessToken);
  t.is(s.idp.counters.tokenRequests.client_credentials, 2);
  t.is(s.idp.counters.lastTokenRequestHeaders?.authorization, undefined);
});

test("StoreUpstreamTokens then GetValidTokens: served as stored before expiry, refreshed with rotation after", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const minted = await s.mint();
  t.is(await s.store("sess-1", minted, 300), 1n);
  const before = await s.client.getValidTokens(getValid("sess-1"));
  t.is(before.credential?.accessToken, minted.accessToken);
  t.is(before.credential?.generation, 1n);
  t.is(refreshCount(s), 0);

  // A new generation that is already past its skew: the next read refreshes.
  t.is(await s.store("sess-1", minted, 2), 2n);
  const after = await s.client.getValidTokens(getValid("sess-1"));
  t.is(refreshCount(s), 1);
  t.not(after.credential?.accessToken, minted.accessToken);
  t.is(after.credential?.generation, 3n);
  t.true((await s.idp.introspect(after.credential!.accessToken)).active);
  // The rotated refresh token was stored; the id token was carried forward.
  const stored = await s.server.store.getActive(sessionKey("sess-1", "idp"));
  t.truthy(stored?.tokens?.refreshToken);
  t.not(stored?.tokens?.refreshToken, minted.refreshToken);
  t.is(after.credential?.idToken !== "", true);
  // The provider now rejects the old refresh token.
  const upstream = createUpstreamClient({
    maxResponseBytes: 64 * 1024,
    providers: new Map([
      [
        "idp",
        {
          issuer: s.idp.issuer,
          clientId: "tokenvend",
          clientSecret: s.idp.client("tokenvend").clientSecret,
          authMethod: "client_secret_basic",
          timeoutMs: 2000,
        },
      ],
    ]),
  });
  const err = await t.throwsAsync(
    upstream.refresh("idp", {
      refreshToken: minted.refreshToken,
      signal: new AbortController().signal,
    }),
  );
  t.true(err instanceof UpstreamError && err.permanent && err.oauthError === "invalid_grant");
});

test("200 concurrent GetValidTokens on an expired token cause one token request and get one token", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  await s.store("sess-herd", await s.mint(), 2);
  const all = await Promise.all(
    Array.from({ length: 200 }, () => s.client.getValidTokens(getValid("sess-herd"))),
  );
  t.is(refreshCount(s), 1);
  t.is(new Set(all.map((r) => r.credential?.accessToken)).size, 1);
  t.true(all.every((r) => r.credential?.generation === 2n));
  t.is(s.idp.counters.invalidGrant, 0);
});

test("error table: REFRESH_FAILED, NO_REFRESH_TOKEN, SESSION_NOT_FOUND, INVALID_BINDING", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const revoked = await s.mint();
  await s.idp.revoke(revoked.refreshToken);
  await s.store("sess-revoked", revoked, 2);
  const e1 = grpcFailure(await t.throwsAsync(s.client.getValidTokens(getValid("sess-revoked"))));
  t.deepEqual(e1, { code: status.FAILED_PRECONDITION, reason: "REFRESH_FAILED", fields: [] });
  // Permanent: no second attempt at the provider for that token.
  const before = refreshCount(s);
  const e1b = grpcFailure(await t.throwsAsync(s.client.getValidTokens(getValid("sess-revoked"))));
  t.is(e1b.reason, "REFRESH_FAILED");
  t.is(refreshCount(s), before);

  await s.store("sess-nort", await s.mint(), 2, { refreshToken: "" });
  const e2 = grpcFailure(await t.throwsAsync(s.client.getValidTokens(getValid("sess-nort"))));
  t.deepEqual(e2, { code: status.FAILED_PRECONDITION, reason: "NO_REFRESH_TOKEN", fields: [] });

  const e3 = grpcFailure(await t.throwsAsync(s.client.getValidTokens(getValid("nobody"))));
  t.deepEqual(e3, { code: status.NOT_FOUND, reason: "SESSION_NOT_FOUND", fields: [] });

  await s.store("sess-bound", await s.mint(), 300);
  const e4 = grpcFailure(
    await t.throwsAsync(
      s.client.getValidTokens(getValid("sess-bound", "idp", { expectedSubject: "mallory" })),
    ),
  );
  t.deepEqual(e4, { code: status.PERMISSION_DENIED, reason: "INVALID_BINDING", fields: [] });
  const e5 = grpcFailure(
    await t.throwsAsync(
      s.client.getValidTokens(getValid("sess-bound", "idp", { expectedClientId: "other" })),
    ),
  );
  t.is(e5.reason, "INVALID_BINDING");
  const ok = await s.client.getValidTokens(
    getValid("sess-bound", "idp", { expectedSubject: "alice", expectedClientId: "tokenvend" }),
  );
  t.truthy(ok.credential?.accessToken);
});

test("IdP down: a valid token is served, an expired one is UNAVAILABLE, and it recovers on the next backoff step", async (t) => {
  const s = await startStack({ backoff: { initial: "500ms", max: "500ms" } });
  t.teardown(s.stop);
  const valid = await s.mint();
  await s.store("sess-valid", valid, 300);
  await s.store("sess-expired", await s.mint(), 2);
  await s.idp.stop();

  const served = await s.client.getValidTokens(getValid("sess-valid"));
  t.is(served.credential?.accessToken, valid.accessToken);
  const down = grpcFailure(await t.throwsAsync(s.client.getValidTokens(getValid("sess-expired"))));
  t.deepEqual(down, { code: status.UNAVAILABLE, reason: "UPSTREAM_UNAVAILABLE", fields: [] });

  await s.idp.start();
  // Inside the backoff window the provider is not asked again.
  const gated = grpcFailure(await t.throwsAsync(s.client.getValidTokens(getValid("sess-expired"))));
  t.is(gated.reason, "UPSTREAM_UNAVAILABLE");
  t.is(refreshCount(s), 0);
  await sleep(600);
  const recovered = await s.client.getValidTokens(getValid("sess-expired"));
  t.is(recovered.credential?.generation, 2n);
  t.is(refreshCount(s), 1);
});

test("GetAllUpstreamCredentials returns the healthy provider's credential and names the failing one", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const good = await s.mint();
  await s.store("sess-all", good, 300);
  const bad = await s.mint("bob");
  await s.idp.revoke(bad.refreshToken);
  await s.store("sess-all", bad, 2, { provider: "idp2" });
  const res = await s.client.getAllUpstreamCredentials(
    create(GetAllUpstreamCredentialsRequestSchema, { sessionId: "sess-all" }),
  );
  t.deepEqual(Object.keys(res.credentials), ["idp"]);
  t.is(res.credentials.idp?.accessToken, good.accessToken);
  t.deepEqual(
    res.failures.map((f) => [f.provider, f.reason]),
    [["idp2", "REFRESH_FAILED"]],
  );
  const empty = await s.client.getAllUpstreamCredentials(
    create(GetAllUpstreamCredentialsRequestSchema, { sessionId: "nobody" }),
  );
  t.deepEqual(empty.credentials, {});
  t.deepEqual(empty.failures, []);
});

test("RevokeSession deletes the tokens, revokes upstream, and ends service of them", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const minted = await s.mint();
  await s.store("sess-rev", minted, 300);
  const res = await s.client.revokeSession(
    create(RevokeSessionRequestSchema, { sessionId: "sess-rev", revokeUpstream: true }),
  );
  t.deepEqual(res.revokedProviders, ["idp"]);
  t.deepEqual(res.upstreamFailures, []);
  t.is(s.idp.counters.revocationRequests, 1);
  t.false((await s.idp.introspect(minted.refreshToken)).active);
  const gone = grpcFailure(await t.throwsAsync(s.client.getValidTokens(getValid("sess-rev"))));
  t.is(gone.reason, "SESSION_NOT_FOUND");
  // Idempotent: nothing left to revoke.
  const again = await s.client.revokeSession(
    create(RevokeSessionRequestSchema, { sessionId: "sess-rev" }),
  );
  t.deepEqual(again.revokedProviders, []);
  // A new login after revocation works.
  await s.store("sess-rev", await s.mint(), 300);
  t.truthy((await s.client.getValidTokens(getValid("sess-rev"))).credential?.accessToken);
});

test("WatchToken sends the current token, then a renewal; cancelling leaves no timer behind", async (t) => {
  const s = await startStack({ lifetime: { freshness: 0.1, clockSkew: "1s" } });
  t.teardown(s.stop);
  await s.store("sess-watch", await s.mint(), 10);
  const stream = s.client.watch({
    target: { case: "session", value: { sessionId: "sess-watch", provider: "idp" } },
  });
  const it = stream.messages[Symbol.asyncIterator]();
  const first = await it.next();
  t.is(first.value?.reason, RenewalReason.INITIAL);
  t.is(first.value?.credential?.generation, 1n);
  const second = await it.next();
  t.is(second.value?.reason, RenewalReason.REFRESHED);
  t.is(second.value?.credential?.generation, 2n);
  t.is(refreshCount(s), 1);
  const during = s.server.vendor.stats();
  t.is(during.streams, 1);
  t.is(during.watchers, 1);
  t.is(during.timers, 1);
  stream.cancel();
  await t.throwsAsync(it.next());
  for (let i = 0; i < 50 && s.server.vendor.stats().streams > 0; i++) await sleep(20);
  const after = s.server.vendor.stats();
  t.deepEqual([after.streams, after.watchers, after.timers], [0, 0, 0]);
});

test("WatchToken on a grant, and a revocation ends a session stream with NOT_FOUND", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const g = s.client.watch({ target: { case: "grant", value: "demo" } });
  const gi = g.messages[Symbol.asyncIterator]();
  const gf = await gi.next();
  t.truthy(gf.value?.credential?.accessToken);
  g.cancel();
  await t.throwsAsync(gi.next());

  await s.store("sess-w2", await s.mint(), 300);
  const w = s.client.watch({
    target: { case: "session", value: { sessionId: "sess-w2", provider: "idp" } },
  });
  const wi = w.messages[Symbol.asyncIterator]();
  t.is((await wi.next()).value?.credential?.generation, 1n);
  await s.client.revokeSession(create(RevokeSessionRequestSchema, { sessionId: "sess-w2" }));
  const end = grpcFailure(await t.throwsAsync(wi.next()));
  t.deepEqual(end, { code: status.NOT_FOUND, reason: "SESSION_NOT_FOUND", fields: [] });
});
