// RFC 8693 token exchange run by tokenvend against the real oidc-provider's custom grant: the
// token comes back narrowed to one audience, is cached per (subject, audience, scopes) and
// streamed by WatchToken; a stream of it ends when its subject is revoked; a provider without
// token exchange is FAILED_PRECONDITION / UNSUPPORTED.

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import test from "ava";
import {
  type ExchangeTargetSchema,
  ExchangeTokenRequestSchema,
  RenewalReason,
  RevokeSessionRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { type LocalIdp, startLocalIdp } from "../src/dev/local-idp.ts";
import { grpcFailureDetail, type Stack, startStack } from "./support/stack.ts";

const audience = "https://orders.example.test";
let stack: Stack;

test.before(async () => {
  stack = await startStack({ provider: { tokenExchange: true } });
});
test.after.always(async () => {
  await stack?.stop();
});

type Target = MessageInitShape<typeof ExchangeTargetSchema>;
const exchange = (target: Target, extra: { minValiditySeconds?: number } = {}) =>
  stack.client.exchangeToken(create(ExchangeTokenRequestSchema, { target, ...extra }));
const session = (sessionId: string, provider = "idp") => ({
  subject: { case: "session" as const, value: { sessionId, provider } },
});

test.serial(
  "an exchanged token is narrowed to the audience and scopes asked for, for the same user",
  async (t) => {
    await stack.store("x-1", await stack.mint("erin"), 300);
    const res = await exchange({ ...session("x-1"), audience, scopes: ["api:read"] });
    const cred = res.credential;
    t.is(res.issuedTokenType, "urn:ietf:params:oauth:token-type:access_token");
    t.is(cred?.tokenType, "Bearer");
    t.deepEqual(cred?.scopes, ["api:read"]);
    t.is(cred?.generation, 1n);
    const info = await stack.idp.introspect(cred?.accessToken ?? "");
    t.true(info.active);
    t.is(info.sub, "erin");
    t.is(info.aud, audience);
    t.is(info.scope, "api:read");
    t.is(stack.idp.counters.tokenRequests["urn:ietf:params:oauth:grant-type:token-exchange"], 1);
    t.is(
      stack.idp.counters.tokenRequests.refresh_token,
      undefined,
      "the subject was valid: not refreshed",
    );
  },
);

test.serial(
  "cached per (subject, audience, scopes): a second call is served from memory; another audience is another token",
  async (t) => {
    await stack.store("x-2", await stack.mint(), 300);
    const before =
      stack.idp.counters.tokenRequests["urn:ietf:params:oauth:grant-type:token-exchange"] ?? 0;
    const a = await exchange({ ...session("x-2"), audience, scopes: ["api:read"] });
    const b = await exchange({ ...session("x-2"), audience, scopes: ["api:read"] });
    t.is(a.credential?.accessToken, b.credential?.accessToken);
    const c = await exchange({
      ...session("x-2"),
      audience: "https://billing.example.test",
      scopes: ["api:read"],
    });
    t.not(c.credential?.accessToken, a.credential?.accessToken);
    t.is(
      (await stack.idp.introspect(c.credential?.accessToken ?? "")).aud,
      "https://billing.example.test",
    );
    const after =
      stack.idp.counters.tokenRequests["urn:ietf:params:oauth:grant-type:token-exchange"] ?? 0;
    t.is(after - before, 2);
  },
);

test("a grant's token can be the subject too", async (t) => {
  const res = await exchange({ subject: { case: "grant", value: "demo" }, audience });
  t.is((await stack.idp.introspect(res.credential?.accessToken ?? "")).aud, audience);
});

test.serial(
  "min_validity_seconds beyond the cached token's remaining life exchanges again",
  async (t) => {
    await stack.store("x-3", await stack.mint(), 300);
    const a = await exchange({ ...session("x-3"), audience });
    // The provider's tokens live 300 s, less the 5 s skew: the longest validity one can have.
    const b = await exchange({ ...session("x-3"), audience }, { minValiditySeconds: 295 });
    t.not(a.credential?.accessToken, b.credential?.accessToken);
    t.is(b.credential?.generation, 2n);
  },
);

test.serial(
  "min_validity_seconds longer than the provider's tokens live: FAILED_PRECONDITION, no exchange",
  async (t) => {
    await stack.store("x-3b", await stack.mint(), 300);
    await exchange({ ...session("x-3b"), audience });
    stack.idp.resetCounters();
    for (let i = 0; i < 5; i++) {
      const err = await t.throwsAsync(
        exchange({ ...session("x-3b"), audience }, { minValiditySeconds: 3600 }),
      );
      const f = grpcFailureDetail(err);
      t.is(f.code, 9);
      t.is(f.reason, "MIN_VALIDITY_UNREACHABLE");
      t.is(f.metadata.max_min_validity_seconds, "295");
    }
    t.deepEqual(stack.idp.counters.tokenRequests, {}, "the provider was not called");
  },
);

test("WatchToken streams the exchanged token, and ends with NOT_FOUND when its subject is revoked", async (t) => {
  await stack.store("x-4", await stack.mint(), 300);
  const s = stack.client.watch({
    target: { case: "exchange", value: { ...session("x-4"), audience } },
  });
  const it = s.messages[Symbol.asyncIterator]();
  const first = (await it.next()).value;
  t.is(first?.reason, RenewalReason.INITIAL);
  t.is((await stack.idp.introspect(first?.credential?.accessToken ?? "")).aud, audience);
  await stack.client.revokeSession(create(RevokeSessionRequestSchema, { sessionId: "x-4" }));
  const end = await it.next().then(
    () => undefined,
    (e: unknown) => grpcFailureDetail(e),
  );
  t.is(end?.code, 5);
  t.is(end?.reason, "SESSION_NOT_FOUND");
});

test("a cached exchanged token is not served once its subject session is revoked: NOT_FOUND", async (t) => {
  await stack.store("x-5", await stack.mint(), 300);
  const first = await exchange({ ...session("x-5"), audience });
  t.truthy(first.credential?.accessToken);
  await stack.client.revokeSession(create(RevokeSessionRequestSchema, { sessionId: "x-5" }));
  const end = await exchange({ ...session("x-5"), audience }).then(
    (r) => r.credential?.accessToken,
    (e: unknown) => grpcFailureDetail(e),
  );
  t.like(end, { code: 5, reason: "SESSION_NOT_FOUND" });
});

test("a provider not configured for token exchange: FAILED_PRECONDITION / UNSUPPORTED", async (t) => {
  const f = await exchange({ subject: { case: "grant", value: "demo-post" }, audience }).then(
    () => undefined,
    (e: unknown) => grpcFailureDetail(e),
  );
  t.is(f?.code, 9);
  t.is(f?.reason, "UNSUPPORTED");
});

test("a provider that answers unsupported_grant_type: UNSUPPORTED too", async (t) => {
  const plain: LocalIdp = await startLocalIdp({ tokenExchange: false });
  const other = await startStack({ idp: plain, provider: { tokenExchange: true } });
  t.teardown(async () => {
    await other.stop();
    await plain.stop();
  });
  const f = await other.client
    .exchangeToken(
      create(ExchangeTokenRequestSchema, {
        target: { subject: { case: "grant", value: "demo" }, audience },
      }),
    )
    .then(
      () => undefined,
      (e: unknown) => grpcFailureDetail(e),
    );
  t.is(f?.code, 9);
  t.is(f?.reason, "UNSUPPORTED");
});

test("an unknown session is NOT_FOUND; a missing audience INVALID_ARGUMENT", async (t) => {
  const nf = await exchange({ ...session("nobody"), audience }).then(
    () => undefined,
    (e: unknown) => grpcFailureDetail(e),
  );
  t.is(nf?.reason, "SESSION_NOT_FOUND");
  const bad = await exchange({ ...session("x-1") }).then(
    () => undefined,
    (e: unknown) => grpcFailureDetail(e),
  );
  t.is(bad?.code, 3);
  t.deepEqual(bad?.fields, ["target.audience"]);
});
