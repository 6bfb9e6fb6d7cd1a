// Every RPC, on both listeners, with every kind of credential a caller can
// bring: none, a bad signature, the wrong audience, expired, an unknown key,
// an allowed caller, a caller without the right, and another owner of the
// session. Each gets its exact code and ErrorInfo reason; health stays open.

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import test from "ava";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { TokenService, WatchTokenRequestSchema } from "../gen/tokenvend/v1/token_service_pb.js";
import { type AuthStack, startAuthStack } from "./support/auth-stack.ts";

type Client = ReturnType<typeof createClient<typeof TokenService>>;
interface Outcome {
  code: Code | "OK";
  reason?: string | undefined;
  rule?: string | undefined;
}

let s: AuthStack;
test.before(async () => {
  s = await startAuthStack();
});
test.after.always(() => s?.stop());

async function outcome(call: () => Promise<unknown>): Promise<Outcome> {
  try {
    await call();
    return { code: "OK" };
  } catch (err) {
    const e = ConnectError.from(err);
    const info = e.findDetails(ErrorInfoSchema)[0];
    return {
      code: e.code,
      reason: info?.reason,
      ...(info?.metadata.rule ? { rule: info.metadata.rule } : {}),
    };
  }
}

const expiry = { case: "expiresIn" as const, value: 300n };

/** Each RPC, touching alice's session (or a fresh one where it would change it). */
const rpcs: Record<
  string,
  (c: Client, headers: Record<string, string>, fresh: string) => Promise<unknown>
> = {
  // Onto alice's session: her own write is a new generation, anyone else's is refused.
  StoreUpstreamTokens: (c, headers) =>
    c.storeUpstreamTokens(
      { sessionId: "s-alice", provider: "idp", accessToken: "at-new", expiry },
      { headers },
    ),
  GetValidTokens: (c, headers) =>
    c.getValidTokens({ sessionId: "s-alice", provider: "idp" }, { headers }),
  GetAllUpstreamCredentials: (c, headers) =>
    c.getAllUpstreamCredentials({ sessionId: "s-alice" }, { headers }),
  GetToken: (c, headers) => c.getToken({ grant: "demo" }, { headers }),
  WatchToken: async (c, headers) => {
    const abort = new AbortController();
    const req = create(WatchTokenRequestSchema, {
      target: { case: "session", value: { sessionId: "s-alice", provider: "idp" } },
    });
    try {
      for await (const _ of c.watchToken(req, { headers, signal: abort.signal })) break;
    } finally {
      abort.abort();
    }
  },
  RevokeSession: (c, headers, fresh) =>
    c.revokeSession({ sessionId: fresh, provider: "idp" }, { headers }),
};

type Case =
  | "none"
  | "badSignature"
  | "wrongAudience"
  | "expired"
  | "unknownKey"
  | "allowed"
  | "withoutRight"
  | "otherOwner";

async function headersFor(kind: Case): Promise<Record<string, string>> {
  const b = (t: string) => ({ authorization: `Bearer ${t}` });
  switch (kind) {
    case "none":
      return {};
    case "badSignature":
      return b(
        await s.issuer.sign({ name: "alice", foreignKey: true, kid: s.issuer.kids[0] as string }),
      );
    case "wrongAudience":
      return b(await s.issuer.sign({ name: "alice", audience: "someone-else" }));
    case "expired":
      return b(await s.issuer.sign({ name: "alice", expiresIn: -120, issuedAgo: 720 }));
    case "unknownKey":
      return b(await s.issuer.sign({ name: "alice", foreignKey: true, kid: "never-published" }));
    case "allowed":
      return b(await s.issuer.sign({ name: "alice" }));
    case "withoutRight":
      return b(await s.issuer.sign({ namespace: "readers", name: "limited" }));
    case "otherOwner":
      return b(await s.issuer.sign({ name: "bob" }));
  }
}

const unauth = (reason: string): Outcome => ({ code: Code.Unauthenticated, reason });
function expected(kind: Case, rpc: string): Outcome {
  switch (kind) {
    case "none":
      return unauth("MISSING_CREDENTIALS");
    case "badSignature":
      return unauth("BAD_SIGNATURE");
    case "wrongAudience":
      return unauth("WRONG_AUDIENCE");
    case "expired":
      return unauth("TOKEN_EXPIRED");
    case "unknownKey":
      return unauth("UNKNOWN_KEY");
    case "allowed":
      return { code: "OK" };
    case "withoutRight":
      return rpc === "GetToken"
        ? { code: Code.PermissionDenied, reason: "GRANT_NOT_ALLOWED", rule: "readers" }
        : { code: Code.PermissionDenied, reason: "METHOD_NOT_ALLOWED", rule: "readers" };
    case "otherOwner":
      // A grant has no owner: any caller the policy lets at it gets its token.
      return rpc === "GetToken"
        ? { code: "OK" }
        : { code: Code.PermissionDenied, reason: "NOT_OWNER" };
  }
}

const listeners: Record<string, () => Transport> = {
  "gRPC listener": () => createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }),
  "HTTP listener (Connect)": () =>
    createConnectTransport({ baseUrl: s.httpUrl, httpVersion: "1.1" }),
};

const cases: Case[] = [
  "none",
  "badSignature",
  "wrongAudience",
  "expired",
  "unknownKey",
  "allowed",
  "withoutRight",
  "otherOwner",
];

for (const [listener, transport] of Object.entries(listeners)) {
  test.serial(
    `${listener}: every RPC × every credential gets its exact code and reason`,
    async (t) => {
      const c = createClient(TokenService, transport());
      await s.store("s-alice", await s.mint("alice"), 300);
      let n = 0;
      const got: Record<string, Outcome> = {};
      const want: Record<string, Outcome> = {};
      for (const kind of cases) {
        for (const [rpc, call] of Object.entries(rpcs)) {
          const fresh = `s-${listener.length}-${kind}-${n++}`;
          // Revocation touches a session of the caller's own: stored first, by alice.
          if (rpc === "RevokeSession") await s.store(fresh, await s.mint("alice"), 300);
          const headers = await headersFor(kind);
          got[`${kind} ${rpc}`] = await outcome(() => call(c, headers, fresh));
          want[`${kind} ${rpc}`] = expected(kind, rpc);
        }
      }
      const wrong = Object.keys(want).filter(
        (k) => JSON.stringify(got[k]) !== JSON.stringify(want[k]),
      );
      t.deepEqual(
        wrong.map((k) => `${k}: ${JSON.stringify(got[k])}`),
        [],
      );
      t.deepEqual(got, want);
    },
  );
}

test.serial("health answers without credentials on the gRPC listener", async (t) => {
  const { execFile } = await import("node:child_process");
  const { promisify } = await import("node:util");
  const { toolPath } = await import("./support/tools.ts");
  const { stdout } = await promisify(execFile)(toolPath("grpcurl"), [
    "-plaintext",
    // Reflection needs credentials like any other call; health itself does not.
    "-import-path",
    new URL("../node_modules/grpc-health-check/proto/health/v1", import.meta.url).pathname,
    "-proto",
    "health.proto",
    "-d",
    '{"service":"tokenvend.v1.TokenService"}',
    s.grpcAddress,
    "grpc.health.v1.Health/Check",
  ]);
  t.deepEqual(JSON.parse(stdout), { status: "SERVING" });
});

test.serial(
  "reflection needs credentials: grpcurl list is refused without, served with a token",
  async (t) => {
    const { execFile } = await import("node:child_process");
    const { promisify } = await import("node:util");
    const { toolPath } = await import("./support/tools.ts");
    const run = promisify(execFile);
    const err = await t.throwsAsync(
      run(toolPath("grpcurl"), ["-plaintext", s.grpcAddress, "list"]),
    );
    t.regex((err as unknown as { stderr: string }).stderr, /Unauthenticated/);
    const bearer = await s.bearer("apps", "alice");
    const { stdout } = await run(toolPath("grpcurl"), [
      "-plaintext",
      "-H",
      `authorization: ${bearer}`,
      s.grpcAddress,
      "list",
    ]);
    t.true(stdout.split("\n").includes("tokenvend.v1.TokenService"), stdout);
  },
);

test.serial(
  "an unauthenticated call is refused before its body is read: a body over the size limit gets UNAUTHENTICATED, not RESOURCE_EXHAUSTED",
  async (t) => {
    const huge = "x".repeat(512 * 1024);
    for (const [listener, transport] of Object.entries(listeners)) {
      const c = createClient(TokenService, transport());
      const anon = await outcome(() => c.getValidTokens({ sessionId: "s-alice", provider: huge }));
      t.deepEqual(anon, { code: Code.Unauthenticated, reason: "MISSING_CREDENTIALS" }, listener);
      const headers = await headersFor("allowed");
      const authed = await outcome(() =>
        c.getValidTokens({ sessionId: "s-alice", provider: huge }, { headers }),
      );
      t.is(authed.code, Code.ResourceExhausted, listener);
    }
  },
);
