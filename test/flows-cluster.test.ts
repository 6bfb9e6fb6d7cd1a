// The flows across a cluster: replica processes sharing one FerretDB, in front of the real
// oidc-provider. A login started on one replica completes on another (the state is shared, and
// still one use); a device authorization polled by one replica reaches a stream on another;
// unused refresh tokens are renewed in the background by the cluster, each redeemed once.

import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import test from "ava";
import {
  CompleteAuthorizationRequestSchema,
  RenewalReason,
  StartAuthorizationRequestSchema,
  StartDeviceAuthorizationRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { createBrowser } from "./support/browser.ts";
import { startCluster } from "./support/cluster.ts";
import { mongoForTests } from "./support/mongo.ts";
import { getValid, grpcFailureDetail } from "./support/stack.ts";

const redirectUri = "http://127.0.0.1:3000/callback";
let mongo: { uri: string; stop(): Promise<void> };
test.before(async () => {
  mongo = await mongoForTests();
});
test.after.always(async () => {
  await mongo?.stop();
});

test.serial("a login started on one replica completes on another, once", async (t) => {
  const c = await startCluster(t, mongo.uri, 2, {
    providerYaml: [`redirectUris: [${redirectUri}]`],
  });
  const [a, b] = c.clients as [(typeof c.clients)[0], (typeof c.clients)[0]];
  const started = await a.startAuthorization(
    create(StartAuthorizationRequestSchema, {
      sessionId: "cl-login",
      provider: "idp",
      redirectUri,
    }),
  );
  const callback = await createBrowser().login(started.authorizationUrl, {
    accountId: "gina",
    redirectUri,
  });
  const done = await b.completeAuthorization(
    create(CompleteAuthorizationRequestSchema, {
      response: { case: "callbackUrl", value: callback },
    }),
  );
  t.is(done.generation, 1n);
  t.is(done.subject, "gina");
  const replay = await a
    .completeAuthorization(
      create(CompleteAuthorizationRequestSchema, {
        response: { case: "callbackUrl", value: callback },
      }),
    )
    .then(
      () => undefined,
      (e: unknown) => grpcFailureDetail(e),
    );
  t.is(replay?.reason, "INVALID_STATE");
  const cred = await a.getValidTokens(getValid("cl-login", "idp", { expectedSubject: "gina" }));
  t.is(cred.credential?.generation, 1n);
});

test.serial(
  "a device authorization polled by one replica reaches a stream on another",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2);
    const [a, b] = c.clients as [(typeof c.clients)[0], (typeof c.clients)[0]];
    const started = await a.startDeviceAuthorization(
      create(StartDeviceAuthorizationRequestSchema, { sessionId: "cl-device", provider: "idp" }),
    );
    const stream = b.watch({
      target: { case: "session", value: { sessionId: "cl-device", provider: "idp" } },
    });
    const it = stream.messages[Symbol.asyncIterator]();
    await sleep(300);
    await createBrowser().approveDevice(started.verificationUriComplete, { accountId: "hank" });
    const first = (await it.next()).value;
    t.is(first?.reason, RenewalReason.INITIAL);
    t.is((await c.idp.introspect(first?.credential?.accessToken ?? "")).sub, "hank");
    stream.cancel();
  },
);

test.serial(
  "unused refresh tokens are renewed in the background, each redeemed once by the cluster",
  async (t) => {
    const c = await startCluster(t, mongo.uri, 2, {
      providerYaml: ["maxUnusedRefresh: 2s"],
      extraYaml: ["unusedRefresh: { scanInterval: 1s, ratePerSecond: 20 }"],
    });
    for (const s of ["cl-u1", "cl-u2", "cl-u3"]) await c.store(s, 3600);
    await sleep(4_500);
    for (const s of ["cl-u1", "cl-u2", "cl-u3"]) {
      const cred = await c.clients[1]!.getValidTokens(getValid(s));
      t.true((cred.credential?.generation ?? 0n) >= 2n, `${s} was renewed`);
    }
    t.true((c.idp.counters.tokenRequests.refresh_token ?? 0) >= 3);
    t.is(c.idp.counters.invalidGrant, 0, "no refresh token redeemed twice");
  },
);
