// Real clients in three languages calling with each kind of credential a
// deployed caller has: a Kubernetes service-account token, an API key, and an
// mTLS client certificate with a SPIFFE id. grpcurl, the Go client on grpc-go
// stubs and the Python client on grpcio stubs each get the same answers as
// without authentication, and nothing without their credential.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import test from "ava";
import { type AuthStack, startAuthStack } from "./support/auth-stack.ts";
import { createTestCa, type Issued, type TestCa } from "./support/certs.ts";
import { runPythonClient } from "./support/python-client.ts";
import { goClientPath, toolPath } from "./support/tools.ts";

const run = promisify(execFile);

let ca: TestCa;
let client: Issued;

test.before(async () => {
  ca = await createTestCa();
  client = await ca.issue(
    "client",
    "workload",
    ["URI:spiffe://example.test/ns/apps/sa/client"],
    "client",
  );
});

type Kind = "a service-account token" | "an API key" | "an mTLS certificate";
const kinds: Kind[] = ["a service-account token", "an API key", "an mTLS certificate"];

/** A stack of its own per credential (sessions belong to whoever stored them), and that credential as env. */
async function stackFor(kind: Kind): Promise<{ s: AuthStack; env: Record<string, string> }> {
  if (kind !== "an mTLS certificate") {
    const s = await startAuthStack();
    const authorization =
      kind === "an API key" ? `Bearer ${s.apiKey}` : await s.bearer("apps", `sa-${Date.now()}`);
    return { s, env: { TOKENVEND_AUTHORIZATION: authorization } };
  }
  const server = await ca.issue(`server-${Date.now()}`, "server", ["IP:127.0.0.1"], "server");
  const s = await startAuthStack({
    auth: { mtls: true },
    config: { tls: { certFile: server.cert, keyFile: server.key, clientCaFile: ca.caCert } },
  });
  return {
    s,
    env: {
      TOKENVEND_CA_FILE: ca.caCert,
      TOKENVEND_CERT_FILE: client.cert,
      TOKENVEND_KEY_FILE: client.key,
    },
  };
}

function grpcurlArgs(env: Record<string, string>): string[] {
  if (env.TOKENVEND_AUTHORIZATION !== undefined)
    return ["-plaintext", "-H", `authorization: ${env.TOKENVEND_AUTHORIZATION}`];
  return [
    "-cacert",
    env.TOKENVEND_CA_FILE ?? "",
    "-cert",
    env.TOKENVEND_CERT_FILE ?? "",
    "-key",
    env.TOKENVEND_KEY_FILE ?? "",
  ];
}

for (const kind of kinds) {
  test(`grpcurl with ${kind}: reflection, a call, and UNAUTHENTICATED without it`, async (t) => {
    const { s, env } = await stackFor(kind);
    t.teardown(s.stop);
    const grpcurl = toolPath("grpcurl");
    const args = grpcurlArgs(env);
    const { stdout } = await run(grpcurl, [
      ...args,
      "-d",
      '{"grant":"demo"}',
      s.grpcAddress,
      "tokenvend.v1.TokenService/GetToken",
    ]);
    const got = JSON.parse(stdout) as { credential: { accessToken: string; generation: string } };
    t.is(got.credential.generation, "1");
    t.true(got.credential.accessToken.length > 0);
    const bare =
      kind === "an mTLS certificate" ? ["-cacert", env.TOKENVEND_CA_FILE ?? ""] : ["-plaintext"];
    const err = await t.throwsAsync(
      run(grpcurl, [
        ...bare,
        "-d",
        '{"grant":"demo"}',
        s.grpcAddress,
        "tokenvend.v1.TokenService/GetToken",
      ]),
    );
    t.regex((err as unknown as { stderr: string }).stderr, /Unauthenticated/);
  });

  test(`the Go client with ${kind}`, async (t) => {
    const bin = await goClientPath();
    const { s, env } = await stackFor(kind);
    t.teardown(s.stop);
    const { stdout } = await run(bin, ["calls", s.grpcAddress], {
      timeout: 30_000,
      env: { ...process.env, ...env },
    });
    const out = JSON.parse(stdout) as Record<string, unknown>;
    t.is(out.stored_generation, 1);
    t.like(out.valid, { access_token: "go-at-1", generation: 1 });
    t.like(out.grant, { token_type: "Bearer", generation: 1 });
    t.deepEqual(out.not_found, {
      code: "NOT_FOUND",
      reason: "SESSION_NOT_FOUND",
      domain: "tokenvend",
    });
    t.deepEqual(out.watch, [
      { reason: "RENEWAL_REASON_INITIAL", access_token: "go-at-1", generation: 1 },
      { reason: "RENEWAL_REASON_STORED", access_token: "go-at-2", generation: 2 },
    ]);
    const err = await t.throwsAsync(
      run(bin, ["calls", s.grpcAddress], {
        timeout: 30_000,
        env: { ...process.env, TOKENVEND_CA_FILE: env.TOKENVEND_CA_FILE ?? "" },
      }),
    );
    t.regex((err as unknown as { stderr: string }).stderr, /Unauthenticated/);
  });

  test(`the Python client with ${kind}`, async (t) => {
    const { s, env } = await stackFor(kind);
    t.teardown(s.stop);
    const out = await runPythonClient(s.grpcAddress, env);
    t.like(out, {
      generation: 1,
      stored_generation: 1,
      session_token: "py-at",
      error_code: "NOT_FOUND",
      reason: "SESSION_NOT_FOUND",
      watch_reason: "RENEWAL_REASON_INITIAL",
    });
    t.is(out.token, out.watch_token);
    const err = await t.throwsAsync(
      runPythonClient(s.grpcAddress, { TOKENVEND_CA_FILE: env.TOKENVEND_CA_FILE ?? "" }),
    );
    t.regex(String((err as unknown as { stderr: string }).stderr), /UNAUTHENTICATED/);
  });
}
