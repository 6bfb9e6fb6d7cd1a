// The device authorization grant run by tokenvend against the real oidc-provider: the caller
// gets the user code and verification URI, tokenvend polls the provider itself, and a WatchToken
// stream opened before the user approved delivers the first token; a refusal ends the stream
// with the provider's error; a provider that wants slower polling (slow_down) gets it.

import { create } from "@bufbuild/protobuf";
import test from "ava";
import {
  RenewalReason,
  StartDeviceAuthorizationRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { type LocalIdp, startLocalIdp } from "../src/dev/local-idp.ts";
import { createBrowser } from "./support/browser.ts";
import { getValid, grpcFailureDetail, type Stack, startStack } from "./support/stack.ts";

const deviceGrant = "urn:ietf:params:oauth:grant-type:device_code";

const startDevice = (stack: Stack, sessionId: string) =>
  stack.client.startDeviceAuthorization(
    create(StartDeviceAuthorizationRequestSchema, {
      sessionId,
      provider: "idp",
      scopes: ["openid", "offline_access", "api:read"],
    }),
  );

const watchSession = (stack: Stack, sessionId: string) => {
  const s = stack.client.watch({
    target: { case: "session", value: { sessionId, provider: "idp" } },
  });
  const it = s.messages[Symbol.asyncIterator]();
  return { next: async () => (await it.next()).value, cancel: s.cancel };
};

test("a stream opened before the user approves delivers the first token; tokenvend polls by itself", async (t) => {
  const stack = await startStack({ idpOptions: { deviceIntervalSec: 1 } });
  t.teardown(() => stack.stop());
  const started = await startDevice(stack, "tv-1");
  t.regex(started.userCode, /^[A-Z]{4}-[A-Z]{4}$/);
  t.is(started.verificationUri, `${stack.idp.issuer}/device`);
  t.true(
    started.verificationUriComplete.includes(encodeURIComponent(started.userCode)) ||
      started.verificationUriComplete.includes(started.userCode),
  );
  t.is(started.intervalSeconds, 1);

  const stream = watchSession(stack, "tv-1");
  await new Promise((r) => setTimeout(r, 1_500));
  await createBrowser().approveDevice(started.verificationUriComplete, { accountId: "dave" });
  const first = await stream.next();
  t.is(first?.reason, RenewalReason.INITIAL);
  t.is(first?.credential?.generation, 1n);
  const info = await stack.idp.introspect(first?.credential?.accessToken ?? "");
  t.is(info.sub, "dave");
  stream.cancel();

  const cred = await stack.client.getValidTokens(
    getValid("tv-1", "idp", { expectedSubject: "dave" }),
  );
  t.is(cred.credential?.generation, 1n);
  t.true((stack.idp.counters.tokenRequests[deviceGrant] ?? 0) >= 2);
});

test("a refused device authorization ends the stream: FAILED_PRECONDITION, oauth_error access_denied", async (t) => {
  const stack = await startStack({ idpOptions: { deviceIntervalSec: 1 } });
  t.teardown(() => stack.stop());
  const started = await startDevice(stack, "tv-denied");
  const stream = watchSession(stack, "tv-denied");
  await createBrowser().approveDevice(started.verificationUriComplete, { deny: true });
  const err = await stream.next().then(
    () => undefined,
    (e: unknown) => e,
  );
  const f = grpcFailureDetail(err);
  t.is(f.code, 9);
  t.is(f.reason, "AUTHORIZATION_FAILED");
  t.is(f.metadata.oauth_error, "access_denied");
  const none = await stack.client.getValidTokens(getValid("tv-denied")).then(
    () => undefined,
    (e: unknown) => grpcFailureDetail(e),
  );
  t.is(none?.reason, "SESSION_NOT_FOUND");
});

test("slow_down: each one adds 5 s to the polling interval (RFC 8628 §3.5)", async (t) => {
  // The IdP advertises 1 s and enforces 2 s: the second poll, 1 s after the first, is slow_down.
  const idp: LocalIdp = await startLocalIdp({ deviceIntervalSec: 1, deviceEnforcedIntervalSec: 2 });
  const stack = await startStack({ idp });
  t.teardown(async () => {
    await stack.stop();
    await idp.stop();
  });
  const started = await startDevice(stack, "tv-slow");
  const polls = () => idp.counters.tokenRequests[deviceGrant] ?? 0;
  await new Promise((r) => setTimeout(r, 2_500));
  t.is(polls(), 2, "polled at 1 s and 2 s");
  await createBrowser().approveDevice(started.verificationUriComplete);
  // Without the slow_down the next poll would come at 3 s and succeed; it comes at 7 s.
  await new Promise((r) => setTimeout(r, 3_000));
  t.is(polls(), 2, "no poll between 2 s and 5.5 s");
  const none = await stack.client.getValidTokens(getValid("tv-slow")).then(
    () => "found",
    (e: unknown) => grpcFailureDetail(e).reason,
  );
  t.is(none, "SESSION_NOT_FOUND");
  for (let i = 0; i < 40 && polls() < 3; i++) await new Promise((r) => setTimeout(r, 100));
  t.is(polls(), 3);
  await new Promise((r) => setTimeout(r, 300));
  const cred = await stack.client.getValidTokens(getValid("tv-slow"));
  t.is(cred.credential?.generation, 1n);
});
