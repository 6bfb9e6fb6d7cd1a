// How tokenvend's client authenticates at the real oidc-provider beyond one secret: several
// secrets, so one can be rotated at the provider without downtime (on invalid_client the next
// is tried, the switch logged and counted, and kept), and private_key_jwt (RFC 7523) with an
// EC key made by openssl and read from a file.

import { execFileSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import test from "ava";
import { GetTokenRequestSchema } from "../gen/tokenvend/v1/token_service_pb.js";
import type { Logger } from "../src/core/logger.ts";
import { type LocalIdp, startLocalIdp } from "../src/dev/local-idp.ts";
import { createTestMeter, sumOf } from "./support/otel.ts";
import { grpcFailureDetail, type Stack, startStack } from "./support/stack.ts";

const dir = mkdtempSync(join(tmpdir(), "tokenvend-client-auth-"));
const keyFile = (name: string) => {
  const path = join(dir, name);
  execFileSync("openssl", [
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    path,
  ]);
  return path;
};
const signingKey = keyFile("signing.pem");
const otherKey = keyFile("other.pem");
const oldSecret = "oldsecret0123456789abcdef";
const newSecret = "newsecret0123456789abcdef";

const warnings: Array<{ obj: object; msg: string | undefined }> = [];
const logger: Logger = {
  debug: () => {},
  info: () => {},
  warn: (obj, msg) => warnings.push({ obj, msg }),
  error: () => {},
};

const meter = createTestMeter();
let idp: LocalIdp;
let stack: Stack;
test.before(async () => {
  const publicJwk = {
    ...createPublicKey(readFileSync(signingKey, "utf8")).export({ format: "jwk" }),
    kid: "k1",
    alg: "ES256",
    use: "sig",
  };
  idp = await startLocalIdp({
    clients: [
      { clientId: "tokenvend", authMethod: "client_secret_basic" },
      { clientId: "tokenvend-post", authMethod: "client_secret_post" },
      { clientId: "rotating", authMethod: "client_secret_basic", clientSecret: oldSecret },
      { clientId: "signed", authMethod: "private_key_jwt", publicJwk },
    ],
  });
  const base = { issuer: idp.issuer, timeout: "2s" };
  stack = await startStack({
    idp,
    env: { ROT_OLD: oldSecret, ROT_NEW: newSecret },
    providers: {
      rot: {
        ...base,
        clientId: "rotating",
        clientSecretEnv: "ROT_OLD",
        clientSecretEnvs: ["ROT_NEW"],
      },
      signed: {
        ...base,
        clientId: "signed",
        authMethod: "private_key_jwt",
        privateKeyFile: signingKey,
        privateKeyId: "k1",
      },
      forged: {
        ...base,
        clientId: "signed",
        authMethod: "private_key_jwt",
        privateKeyFile: otherKey,
        privateKeyId: "k1",
      },
    },
    grants: {
      "rot-grant": { provider: "rot", scopes: ["api:read"] },
      "rot-grant-2": { provider: "rot", scopes: ["api:write"] },
      "signed-grant": { provider: "signed", scopes: ["api:read"] },
      "forged-grant": { provider: "forged", scopes: ["api:read"] },
    },
    server: { logger, telemetry: { meterProvider: meter.meterProvider } },
  });
});
test.after.always(async () => {
  await stack?.stop();
  await idp?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const getToken = (grant: string, minValiditySeconds = 0) =>
  stack.client.getToken(create(GetTokenRequestSchema, { grant, minValiditySeconds }));
const basic = (id: string, secret: string) =>
  `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`;

test.serial(
  "a secret rotated at the provider: the next one is tried on invalid_client, logged, and kept",
  async (t) => {
    await getToken("rot-grant");
    t.is(idp.counters.lastTokenRequestHeaders?.authorization, basic("rotating", oldSecret));
    await idp.setClientSecret("rotating", newSecret);
    idp.resetCounters();
    // A token that must outlive the cached one: a new client_credentials request.
    // (300 s tokens, 30 s of skew: 270 s is the longest validity the provider's tokens have.)
    const renewed = await getToken("rot-grant", 270);
    t.truthy(renewed.credential?.accessToken);
    t.is(
      idp.counters.tokenRequests.client_credentials,
      2,
      "refused with the old secret, then the new one",
    );
    t.is(idp.counters.lastTokenRequestHeaders?.authorization, basic("rotating", newSecret));
    const switched = warnings.filter((w) => /client secret rejected/.test(w.msg ?? ""));
    t.is(switched.length, 1);
    t.deepEqual(switched[0]?.obj, { provider: "rot", secretIndex: 1 });
    const rm = await meter.collect();
    t.is(sumOf(rm, "tokenvend.client_secret.switches", { "tokenvend.provider": "rot" }), 1);
    t.false(JSON.stringify(warnings).includes(newSecret));
    t.false(JSON.stringify(warnings).includes(oldSecret));
    idp.resetCounters();
    // Another grant of the provider (rot-grant was just refreshed: its next forced refresh waits).
    await getToken("rot-grant-2");
    t.is(
      idp.counters.tokenRequests.client_credentials,
      1,
      "the new secret is used first from now on",
    );
  },
);

test("private_key_jwt: a client assertion signed with the key from the file, no secret sent", async (t) => {
  const res = await getToken("signed-grant");
  t.truthy(res.credential?.accessToken);
  const info = await idp.introspect(res.credential?.accessToken ?? "");
  t.is(info.client_id, "signed");
});

test("private_key_jwt with a key the provider does not know: REFRESH_FAILED (invalid_client)", async (t) => {
  const f = await getToken("forged-grant").then(
    () => undefined,
    (e: unknown) => grpcFailureDetail(e),
  );
  t.is(f?.code, 9);
  t.is(f?.reason, "REFRESH_FAILED");
  t.regex(f?.message ?? "", /invalid_client/);
});
