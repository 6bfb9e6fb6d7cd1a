// The same service over every protocol and client a caller may use: the same
// RPC gives the same answer and the same error on each. Bad input is refused
// with INVALID_ARGUMENT and field violations, and changes nothing.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { create, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import test from "ava";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  GetTokenRequestSchema,
  GetValidTokensResponseSchema,
  StoreUpstreamTokensRequestSchema,
  TokenService,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { sessionKey } from "../src/core/token.ts";
import { createRawClient } from "./support/raw-rpc.ts";
import { getValid, grpcFailure, type Stack, startStack } from "./support/stack.ts";
import { toolPath } from "./support/tools.ts";

const run = promisify(execFile);

interface Outcome {
  token?: string | undefined;
  code?: number;
  reason?: string | undefined;
  fields?: string[];
}

function connectTransports(s: Stack): Record<string, Transport> {
  return {
    "connect/http1.1": createConnectTransport({ baseUrl: s.httpUrl, httpVersion: "1.1" }),
    "connect/h2c": createConnectTransport({ baseUrl: s.httpUrl, httpVersion: "2" }),
    "grpc-web/http1.1": createGrpcWebTransport({ baseUrl: s.httpUrl, httpVersion: "1.1" }),
    "grpc/h2c (connect listener)": createGrpcTransport({ baseUrl: s.httpUrl }),
    "grpc (grpc-js listener, Connect client)": createGrpcTransport({
      baseUrl: `http://${s.grpcAddress}`,
    }),
  };
}

function connectOutcome(err: unknown): Outcome {
  const e = ConnectError.from(err);
  return {
    code: e.code,
    reason: e.findDetails(ErrorInfoSchema)[0]?.reason,
    fields: e.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field) ?? [],
  };
}

async function grpcurl(s: Stack, method: string, body: object): Promise<Outcome> {
  try {
    const { stdout } = await run(toolPath("grpcurl"), [
      "-plaintext",
      "-format-error",
      "-d",
      JSON.stringify(body),
      s.grpcAddress,
      `tokenvend.v1.TokenService/${method}`,
    ]);
    return { token: JSON.parse(stdout).credential?.accessToken };
  } catch (err) {
    const out = JSON.parse((err as { stderr: string }).stderr) as {
      code: number;
      details?: { "@type": string; reason?: string; fieldViolations?: { field: string }[] }[];
    };
    const details = out.details ?? [];
    return {
      code: out.code,
      reason: details.find((d) => d["@type"].endsWith("ErrorInfo"))?.reason,
      fields:
        details
          .find((d) => d["@type"].endsWith("BadRequest"))
          ?.fieldViolations?.map((v) => v.field) ?? [],
    };
  }
}

async function curl(s: Stack, method: string, body: string): Promise<Outcome & { http: number }> {
  const { stdout } = await run("curl", [
    "-s",
    "--http1.1",
    "-w",
    "\n%{http_code}",
    "-H",
    "content-type: application/json",
    "-d",
    body,
    `${s.httpUrl}/tokenvend.v1.TokenService/${method}`,
  ]);
  const nl = stdout.lastIndexOf("\n");
  const json = JSON.parse(stdout.slice(0, nl)) as {
    credential?: { accessToken: string };
    code?: string;
    details?: {
      type: string;
      debug?: { reason?: string; fieldViolations?: { field: string }[] };
    }[];
  };
  const codeOf: Record<string, number> = {
    not_found: Code.NotFound,
    invalid_argument: Code.InvalidArgument,
    failed_precondition: Code.FailedPrecondition,
  };
  const d = json.details ?? [];
  return {
    http: Number(stdout.slice(nl + 1)),
    ...(json.code === undefined
      ? { token: json.credential?.accessToken }
      : {
          code: codeOf[json.code] ?? -1,
          reason: d.find((x) => x.type === "google.rpc.ErrorInfo")?.debug?.reason,
          fields:
            d
              .find((x) => x.type === "google.rpc.BadRequest")
              ?.debug?.fieldViolations?.map((v) => v.field) ?? [],
        }),
  };
}

test("one answer and one error per RPC on every protocol and client", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const minted = await s.mint();
  await s.store("sess-p", minted, 300);

  const cases: { name: string; method: string; body: Record<string, unknown>; expect: Outcome }[] =
    [
      {
        name: "valid session",
        method: "GetValidTokens",
        body: { sessionId: "sess-p", provider: "idp" },
        expect: { token: minted.accessToken },
      },
      {
        name: "unknown session",
        method: "GetValidTokens",
        body: { sessionId: "nobody", provider: "idp" },
        expect: { code: status.NOT_FOUND, reason: "SESSION_NOT_FOUND", fields: [] },
      },
      {
        name: "unknown provider",
        method: "GetValidTokens",
        body: { sessionId: "sess-p", provider: "nope" },
        expect: { code: status.NOT_FOUND, reason: "PROVIDER_NOT_FOUND", fields: ["provider"] },
      },
      {
        name: "empty ids",
        method: "GetValidTokens",
        body: { sessionId: "", provider: "" },
        expect: {
          code: status.INVALID_ARGUMENT,
          reason: "INVALID_ARGUMENT",
          fields: ["session_id", "provider"],
        },
      },
      {
        name: "unknown grant",
        method: "GetToken",
        body: { grant: "nope" },
        expect: { code: status.NOT_FOUND, reason: "GRANT_NOT_FOUND", fields: ["grant"] },
      },
    ];
  const grantToken = (await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" })))
    .credential?.accessToken;
  cases.push({
    name: "grant",
    method: "GetToken",
    body: { grant: "demo" },
    expect: { token: grantToken },
  });

  const transports = connectTransports(s);
  for (const c of cases) {
    // @grpc/grpc-js
    let got: Outcome;
    try {
      const res =
        c.method === "GetToken"
          ? await s.client.getToken(create(GetTokenRequestSchema, c.body))
          : await s.client.getValidTokens(
              getValid(c.body.sessionId as string, c.body.provider as string),
            );
      got = { token: res.credential?.accessToken };
    } catch (err) {
      got = grpcFailure(err);
    }
    t.deepEqual(got, c.expect, `${c.name} via @grpc/grpc-js`);

    for (const [name, transport] of Object.entries(transports)) {
      const client = createClient(TokenService, transport);
      try {
        const res =
          c.method === "GetToken"
            ? await client.getToken(c.body)
            : await client.getValidTokens(c.body);
        got = { token: res.credential?.accessToken };
      } catch (err) {
        got = connectOutcome(err);
      }
      t.deepEqual(got, c.expect, `${c.name} via ${name}`);
    }

    const snake = Object.fromEntries(
      Object.entries(c.body).map(([k, v]) => [
        k.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`),
        v,
      ]),
    );
    t.deepEqual(await grpcurl(s, c.method, snake), c.expect, `${c.name} via grpcurl`);
    const { http, ...viaCurl } = await curl(s, c.method, JSON.stringify(c.body));
    t.deepEqual(viaCurl, c.expect, `${c.name} via curl`);
    t.is(
      http,
      c.expect.token !== undefined ? 200 : c.expect.code === status.NOT_FOUND ? 404 : 400,
      `${c.name} HTTP status`,
    );
  }
});

test("grpcurl lists services through reflection, describes a message with its comments, and checks health", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const g = toolPath("grpcurl");
  const list = (await run(g, ["-plaintext", s.grpcAddress, "list"])).stdout.split("\n");
  t.true(list.includes("tokenvend.v1.TokenService"));
  t.true(list.includes("grpc.health.v1.Health"));
  const methods = (await run(g, ["-plaintext", s.grpcAddress, "list", "tokenvend.v1.TokenService"]))
    .stdout;
  for (const m of [
    "StoreUpstreamTokens",
    "GetValidTokens",
    "GetAllUpstreamCredentials",
    "GetToken",
    "WatchToken",
    "RevokeSession",
  ]) {
    t.true(methods.includes(`tokenvend.v1.TokenService.${m}`), m);
  }
  const described = (
    await run(g, ["-plaintext", s.grpcAddress, "describe", "tokenvend.v1.GetValidTokensRequest"])
  ).stdout;
  t.true(described.includes("// GetValidTokensRequest names one session's token at one provider."));
  t.true(described.includes("// Opaque id of the user's session."));
  for (const service of ["", "tokenvend.v1.TokenService"]) {
    const health = await run(g, [
      "-plaintext",
      "-d",
      JSON.stringify({ service }),
      s.grpcAddress,
      "grpc.health.v1.Health/Check",
    ]);
    t.deepEqual(JSON.parse(health.stdout), { status: "SERVING" }, `health of "${service}"`);
  }
});

test("bad input: INVALID_ARGUMENT with field violations, the store unchanged, the server still serving", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const client = createClient(
    TokenService,
    createConnectTransport({ baseUrl: s.httpUrl, httpVersion: "1.1" }),
  );
  const base = {
    sessionId: "sess-bad",
    provider: "idp",
    accessToken: "at",
    expiry: { case: "expiresIn" as const, value: 300n },
  };
  const bad: { body: Record<string, unknown>; fields: string[] }[] = [
    { body: { ...base, sessionId: "" }, fields: ["session_id"] },
    { body: { ...base, sessionId: "x".repeat(257) }, fields: ["session_id"] },
    { body: { ...base, sessionId: "has space" }, fields: ["session_id"] },
    { body: { ...base, sessionId: "tab\there" }, fields: ["session_id"] },
    { body: { ...base, provider: "" }, fields: ["provider"] },
    { body: { ...base, provider: "bad/name" }, fields: ["provider"] },
    { body: { ...base, accessToken: "" }, fields: ["access_token"] },
    { body: { ...base, accessToken: "a".repeat(16_385) }, fields: ["access_token"] },
    { body: { ...base, refreshToken: "with space" }, fields: ["refresh_token"] },
    { body: { ...base, expiry: { case: undefined } }, fields: ["expiry"] },
    { body: { ...base, expiry: { case: "expiresIn", value: 0n } }, fields: ["expires_in"] },
    { body: { ...base, expiry: { case: "expiresIn", value: -5n } }, fields: ["expires_in"] },
    {
      body: { ...base, expiry: { case: "expiresIn", value: 9_000_000_000n } },
      fields: ["expires_in"],
    },
    { body: { ...base, scopes: ["ok", ""] }, fields: ["scopes[1]"] },
    {
      body: { ...base, scopes: Array.from({ length: 101 }, (_, i) => `s${i}`) },
      fields: ["scopes"],
    },
    { body: { ...base, subject: "\u0000" }, fields: ["subject"] },
    // validate.ts's Unicode rules: bidi overrides, invisible characters, text not in NFC.
    { body: { ...base, subject: "admin\u202egnp" }, fields: ["subject"] },
    { body: { ...base, clientId: "web\u200bapp" }, fields: ["client_id"] },
    { body: { ...base, subject: "ju\u0308rgen" }, fields: ["subject"] },
    { body: { ...base, tokenType: "Bear er" }, fields: ["token_type"] },
    {
      body: {
        ...base,
        expiry: { case: "expiresAt", value: { seconds: 4_000_000_000n, nanos: -1 } },
      },
      fields: ["expires_at"],
    },
    {
      body: { ...base, expiry: { case: "expiresAt", value: { seconds: 1n << 62n, nanos: 0 } } },
      fields: ["expires_at"],
    },
    {
      body: { ...base, sessionId: "", provider: "", accessToken: "" },
      fields: ["session_id", "provider", "access_token"],
    },
  ];
  for (const b of bad) {
    const err = await t.throwsAsync(
      client.storeUpstreamTokens(create(StoreUpstreamTokensRequestSchema, b.body)),
    );
    t.deepEqual(
      connectOutcome(err),
      { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", fields: b.fields },
      JSON.stringify(b.fields),
    );
  }
  // Unknown provider on store: NOT_FOUND, nothing written.
  const unknown = await t.throwsAsync(
    client.storeUpstreamTokens(
      create(StoreUpstreamTokensRequestSchema, { ...base, provider: "nope" }),
    ),
  );
  t.is(connectOutcome(unknown).reason, "PROVIDER_NOT_FOUND");
  t.is(await s.server.store.getActive(sessionKey("sess-bad", "idp")), undefined);
  t.deepEqual(await s.server.store.getSession("sess-bad"), []);

  // Wrong JSON types and malformed bodies over HTTP.
  for (const body of [
    '{"sessionId": 5, "provider": "idp"}',
    '{"sessionId": ["a"]}',
    "{not json",
    '{"minValiditySeconds": "many"}',
    '{"minValiditySeconds": -1}',
  ]) {
    const r = await curl(s, "GetValidTokens", body);
    t.is(r.code, Code.InvalidArgument, body);
    t.is(r.http, 400, body);
  }
  // Bytes that are not UTF-8: protobuf refuses them in a string field on both listeners;
  // Connect's JSON decoder replaces them with U+FFFD, which every field's rule refuses.
  const notUtf8 = Buffer.from([0x0a, 0x03, 0x61, 0xff, 0x62, 0x12, 0x03, 0x69, 0x64, 0x70]);
  for (const [name, origin, protocol] of [
    ["gRPC listener", `http://${s.grpcAddress}`, "grpc"],
    ["HTTP listener, gRPC", s.httpUrl, "grpc"],
    ["HTTP listener, Connect", s.httpUrl, "connect"],
  ] as const) {
    const raw = createRawClient(origin);
    const out = await raw.call({
      protocol,
      path: "/tokenvend.v1.TokenService/GetValidTokens",
      body: notUtf8,
      stream: false,
    });
    raw.close();
    t.deepEqual(
      [out.code, out.message],
      [Code.InvalidArgument, "cannot decode tokenvend.v1.GetValidTokensRequest"],
      name,
    );
  }
  const jsonNotUtf8 = await fetch(`${s.httpUrl}/tokenvend.v1.TokenService/GetValidTokens`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: Buffer.concat([
      Buffer.from('{"sessionId":"a'),
      Buffer.from([0xff]),
      Buffer.from('b","provider":"idp","expectedSubject":"x'),
      Buffer.from([0xc3]),
      Buffer.from('"}'),
    ]),
  });
  t.is(jsonNotUtf8.status, 400);
  const violations = (
    (await jsonNotUtf8.json()) as {
      details: { debug?: { fieldViolations?: { field: string }[] } }[];
    }
  ).details
    .flatMap((d) => d.debug?.fieldViolations ?? [])
    .map((v) => v.field);
  t.deepEqual(violations, ["session_id", "expected_subject"]);
  // min_validity_seconds beyond the limit.
  const tooLong = await t.throwsAsync(
    client.getValidTokens({ sessionId: "x", provider: "idp", minValiditySeconds: 8 * 86400 }),
  );
  t.deepEqual(connectOutcome(tooLong).fields, ["min_validity_seconds"]);
  // WatchToken with no target.
  const noTarget = await t.throwsAsync(async () => {
    for await (const _ of client.watchToken({})) break;
  });
  t.deepEqual(connectOutcome(noTarget), {
    code: Code.InvalidArgument,
    reason: "INVALID_ARGUMENT",
    fields: ["target"],
  });
  // An oversized message on the gRPC listener is refused; the server keeps serving.
  const huge = await t.throwsAsync(s.client.getValidTokens(getValid("x".repeat(200_000))));
  t.is(grpcFailure(huge).code, status.RESOURCE_EXHAUSTED);
  const huge2 = await t.throwsAsync(
    client.getValidTokens({ sessionId: "x".repeat(200_000), provider: "idp" }),
  );
  t.is(ConnectError.from(huge2).code, Code.ResourceExhausted);

  await s.store("sess-ok", await s.mint(), 300);
  const ok = await client.getValidTokens({ sessionId: "sess-ok", provider: "idp" });
  t.truthy(toJson(GetValidTokensResponseSchema, ok));
});
