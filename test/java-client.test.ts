// A Java caller with grpc-java stubs generated from proto/ (tools/javaclient, built with Maven:
// protoc and protoc-gen-grpc-java from Maven Central): every RPC of the service, a WatchToken
// stream that sees a renewal and then the revocation that ends it, and errors with their
// google.rpc details as a Java caller decodes them (StatusProto, Any.unpack).

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import test from "ava";
import { GetTokenRequestSchema, TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import { errorAnswers, grantAnswer } from "./support/client-answers.ts";
import { startStack } from "./support/stack.ts";
import { javaClientPath } from "./support/tools.ts";

const run = promisify(execFile);

test("a Java client on grpc-java stubs calls every RPC, follows a stream and decodes ErrorInfo", async (t) => {
  const jar = await javaClientPath();
  const redirectUri = "http://127.0.0.1:3000/callback";
  const s = await startStack({ provider: { redirectUris: [redirectUri], tokenExchange: true } });
  t.teardown(s.stop);
  // Real tokens for the Java client to exchange (Main.java's EXCHANGE_SESSION).
  await s.store("java-exchange", await s.mint("java-user"), 300);
  const before = Date.now();
  const { stdout } = await run("java", ["-jar", jar, "calls", s.grpcAddress], { timeout: 60_000 });
  const after = Date.now();
  const out = JSON.parse(stdout) as { valid: { expires_at_ms: number }; called: string[] } & Record<
    string,
    unknown
  >;
  const { called } = out;
  // The exchanged token is the provider's, narrowed to the audience, for the stored user.
  const info = await s.idp.introspect(String(out.exchanged_access_token));
  t.like(info, { active: true, sub: "java-user", aud: "https://orders.example.test" });

  const expiresAtMs = out.valid.expires_at_ms;
  t.true(
    expiresAtMs >= before + 300_000 - 1_000 && expiresAtMs <= after + 300_000,
    `${expiresAtMs}`,
  );
  const demo = (await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" })))
    .credential;
  if (demo === undefined) throw new Error("GetToken(demo) returned no credential");
  const valid = {
    access_token: "java-at-1",
    id_token: "java-id",
    token_type: "Bearer",
    scopes: ["openid", "api:read"],
    generation: 1,
    expires_at_ms: expiresAtMs,
  };
  t.deepEqual(out, {
    stored_generation: 1,
    valid,
    all: { idp: valid },
    all_failures: 0,
    grant: grantAnswer(demo),
    ...errorAnswers,
    authorization: { origin: s.idp.issuer, state_in_url: true, pkce: true },
    unknown_state: {
      code: "FAILED_PRECONDITION",
      reason: "INVALID_STATE",
      domain: "tokenvend",
    },
    device: { user_code_set: true, verification_uri: `${s.idp.issuer}/device` },
    exchange: {
      issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
      token_type: "Bearer",
      scopes: ["api:read"],
      generation: 1,
    },
    exchanged_access_token: out.exchanged_access_token,
    restored_generation: 2,
    watch: [
      { reason: "RENEWAL_REASON_INITIAL", access_token: "java-at-1", generation: 1 },
      { reason: "RENEWAL_REASON_STORED", access_token: "java-at-2", generation: 2 },
    ],
    revoked_providers: ["idp"],
    watch_end: { code: "NOT_FOUND", reason: "SESSION_NOT_FOUND", domain: "tokenvend" },
    after_revoke: { code: "NOT_FOUND", reason: "SESSION_NOT_FOUND", domain: "tokenvend" },
    called,
  });
  // Every method of the service, so a new RPC fails here until the Java client calls it too.
  t.deepEqual(
    [...called].sort(),
    TokenService.methods.map((m) => m.name).sort(),
    "extend tools/javaclient/…/Main.java with the new RPC",
  );
});
