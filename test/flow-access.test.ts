// The flows tokenvend runs, with caller authentication on: each needs its permission; a login's
// session belongs to the caller that started it, and only that caller may complete it (another
// caller's attempt does not use the state up); an exchanged token is read as its subject is, so
// another owner's session is NOT_OWNER, cached exchange or not.

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import test from "ava";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  CompleteAuthorizationRequestSchema,
  ExchangeTokenRequestSchema,
  GetValidTokensRequestSchema,
  StartAuthorizationRequestSchema,
  StartDeviceAuthorizationRequestSchema,
  TokenService,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { type AuthStack, startAuthStack } from "./support/auth-stack.ts";
import { createBrowser } from "./support/browser.ts";

const redirectUri = "http://127.0.0.1:3000/callback";
let s: AuthStack;

test.before(async () => {
  s = await startAuthStack({ provider: { redirectUris: [redirectUri], tokenExchange: true } });
});
test.after.always(async () => {
  await s?.stop();
});

const client = () =>
  createClient(TokenService, createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }));
const as = async (namespace: string, name: string) => ({
  headers: { authorization: await s.bearer(namespace, name) },
});
const failure = async (p: Promise<unknown>) => {
  const e = ConnectError.from(
    await p.then(
      () => undefined,
      (err: unknown) => err,
    ),
  );
  return { code: e.code, reason: e.findDetails(ErrorInfoSchema)[0]?.reason };
};

test("a login belongs to the caller that started it: only it completes it, and another caller's attempt leaves the state usable", async (t) => {
  const c = client();
  const alice = await as("apps", "alice");
  const bob = await as("apps", "bob");
  const started = await c.startAuthorization(
    create(StartAuthorizationRequestSchema, {
      sessionId: "fa-login",
      provider: "idp",
      redirectUri,
    }),
    alice,
  );
  const callback = await createBrowser().login(started.authorizationUrl, {
    accountId: "carol",
    redirectUri,
  });
  const complete = create(CompleteAuthorizationRequestSchema, {
    response: { case: "callbackUrl", value: callback },
  });
  t.deepEqual(await failure(c.completeAuthorization(complete, bob)), {
    code: Code.PermissionDenied,
    reason: "NOT_OWNER",
  });
  const done = await c.completeAuthorization(complete, alice);
  t.is(done.sessionId, "fa-login");
  t.is(done.generation, 1n);

  const read = create(GetValidTokensRequestSchema, { sessionId: "fa-login", provider: "idp" });
  t.truthy((await c.getValidTokens(read, alice)).credential?.accessToken);
  t.deepEqual(await failure(c.getValidTokens(read, bob)), {
    code: Code.PermissionDenied,
    reason: "NOT_OWNER",
  });
});

test("the flows need their permissions: a caller whose rule does not allow them is PERMISSION_DENIED", async (t) => {
  const c = client();
  const reader = await as("readers", "r");
  const denied = { code: Code.PermissionDenied, reason: "METHOD_NOT_ALLOWED" };
  t.deepEqual(
    await failure(
      c.startAuthorization(
        create(StartAuthorizationRequestSchema, { sessionId: "x", provider: "idp", redirectUri }),
        reader,
      ),
    ),
    denied,
  );
  t.deepEqual(
    await failure(
      c.completeAuthorization(
        create(CompleteAuthorizationRequestSchema, {
          state: "s",
          response: { case: "code", value: "c" },
        }),
        reader,
      ),
    ),
    denied,
  );
  t.deepEqual(
    await failure(
      c.startDeviceAuthorization(
        create(StartDeviceAuthorizationRequestSchema, { sessionId: "x", provider: "idp" }),
        reader,
      ),
    ),
    denied,
  );
  t.deepEqual(
    await failure(
      c.exchangeToken(
        create(ExchangeTokenRequestSchema, {
          target: { subject: { case: "grant", value: "other" }, audience: "https://a.test" },
        }),
        reader,
      ),
    ),
    denied,
  );
  t.deepEqual(
    await failure(
      c.startAuthorization(
        create(StartAuthorizationRequestSchema, { sessionId: "x", provider: "idp", redirectUri }),
      ),
    ),
    { code: Code.Unauthenticated, reason: "MISSING_CREDENTIALS" },
  );
});

test("an exchange reads its subject as the caller may: another owner's session is NOT_OWNER, before and after the owner's exchange is cached", async (t) => {
  const c = client();
  // Stored by the stack's own caller, apps:alice.
  await s.store("fa-exchange", await s.mint("dave"), 300);
  const req = create(ExchangeTokenRequestSchema, {
    target: {
      subject: { case: "session", value: { sessionId: "fa-exchange", provider: "idp" } },
      audience: "https://orders.example.test",
      scopes: ["api:read"],
    },
  });
  const bob = await as("apps", "bob");
  const notOwner = { code: Code.PermissionDenied, reason: "NOT_OWNER" };
  t.deepEqual(await failure(c.exchangeToken(req, bob)), notOwner);
  const mine = await c.exchangeToken(req, await as("apps", "alice"));
  t.truthy(mine.credential?.accessToken);
  t.deepEqual(await failure(c.exchangeToken(req, bob)), notOwner, "the cached exchange too");
  // An operator rule reaching any session of the provider may.
  const ops = createClient(
    TokenService,
    createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }),
  );
  t.deepEqual(
    await failure(ops.exchangeToken(req, await as("ops", "o"))),
    { code: Code.PermissionDenied, reason: "METHOD_NOT_ALLOWED" },
    "ops may read, not exchange",
  );
});
