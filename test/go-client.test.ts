// A Go caller with stubs that protoc-gen-go and protoc-gen-go-grpc generate from proto/
// (tools/goclient, `calls` subcommand): stored and read tokens, a grant, errors with their
// google.rpc details as a Go caller decodes them, and a WatchToken stream that sees a renewal.

import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import test from "ava";
import { GetTokenRequestSchema } from "../gen/tokenvend/v1/token_service_pb.js";
import { GO_TOOLS } from "../scripts/tools.ts";
import { errorAnswers, grantAnswer } from "./support/client-answers.ts";
import { startStack } from "./support/stack.ts";
import { goClientPath } from "./support/tools.ts";

const run = promisify(execFile);

test("a Go client with grpc-go stubs generated from proto/", async (t) => {
  const bin = await goClientPath();
  const s = await startStack();
  t.teardown(s.stop);
  const before = Date.now();
  const { stdout } = await run(bin, ["calls", s.grpcAddress], { timeout: 30_000 });
  const after = Date.now();
  const out = JSON.parse(stdout) as { valid: { expires_at_ms: number } } & Record<string, unknown>;

  // expires_in 300 s, counted from when the server stored it.
  const expiresAtMs = out.valid.expires_at_ms;
  t.true(expiresAtMs >= before + 300_000 && expiresAtMs <= after + 300_000, `${expiresAtMs}`);
  const demo = (await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" })))
    .credential;
  if (demo === undefined) throw new Error("GetToken(demo) returned no credential");
  t.deepEqual(out, {
    stored_generation: 1,
    valid: {
      access_token: "go-at-1",
      id_token: "go-id",
      token_type: "Bearer",
      scopes: ["openid", "api:read"],
      generation: 1,
      expires_at_ms: expiresAtMs,
    },
    // The grant's token as the Node client sees it: the same credential through both stubs.
    grant: grantAnswer(demo),
    ...errorAnswers,
    watch: [
      { reason: "RENEWAL_REASON_INITIAL", access_token: "go-at-1", generation: 1 },
      { reason: "RENEWAL_REASON_STORED", access_token: "go-at-2", generation: 2 },
    ],
    restored_generation: 2,
    watch_end: "CANCELLED",
  });
});

test("protoc-gen-go is pinned at the protobuf runtime version of tools/goclient/go.mod", async (t) => {
  const goMod = await readFile(new URL("../tools/goclient/go.mod", import.meta.url), "utf8");
  const runtime = /^\s*google\.golang\.org\/protobuf (v\S+)/m.exec(goMod)?.[1];
  t.is(runtime, GO_TOOLS["protoc-gen-go"].version);
});
