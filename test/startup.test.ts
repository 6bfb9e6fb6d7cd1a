// A replica that cannot start says why and exits: 2 for a configuration error
// (an option named with what it must be, a persistent store without a key),
// never serving with a half-valid config.

import { spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { npmScriptArgv } from "./support/server-process.ts";

const repo = new URL("..", import.meta.url).pathname;

/** Runs npm start's command with `yaml` as its config; resolves with its exit code and stderr. */
async function start(
  yaml: string,
  env: Record<string, string> = {},
  script: "start" | "dev" = "start",
) {
  const dir = await mkdtemp(join(tmpdir(), "tokenvend-startup-"));
  const configPath = join(dir, "config.yaml");
  await writeFile(configPath, yaml);
  const child = spawn(process.execPath, npmScriptArgv(script).slice(1), {
    cwd: repo,
    env: {
      PATH: process.env.PATH ?? "",
      TOKENVEND_CONFIG: configPath,
      TOKENVEND_GRPC_LISTEN: "127.0.0.1:0",
      TOKENVEND_HTTP_LISTEN: "127.0.0.1:0",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (b: Buffer) => {
    stderr += b.toString();
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  clearTimeout(timer);
  return { code, stderr };
}

test("an invalid option: exit 2, naming the option and what it must be", async (t) => {
  const { code, stderr } = await start("auth: { disabled: true }\nsyncInterval: soon\n");
  t.is(code, 2);
  t.regex(stderr, /invalid configuration: syncInterval must be a duration such as "500ms"/);
});

test("a MongoDB store without an encryption key: exit 2, saying how to make one", async (t) => {
  const { code, stderr } = await start("auth: { disabled: true }\nlogLevel: silent\n", {
    MONGODB_URI: "mongodb://127.0.0.1:1/",
  });
  t.is(code, 2);
  t.regex(stderr, /invalid configuration: .*needs a key: set TOKENVEND_ENCRYPTION_KEYS/);
});

test("a malformed encryption key: exit 2, without echoing the key", async (t) => {
  const secretish = "not-a-valid-key-material-1234567890";
  const { code, stderr } = await start("auth: { disabled: true }\nlogLevel: silent\n", {
    TOKENVEND_DATA_DIR: await mkdtemp(join(tmpdir(), "tokenvend-startup-data-")),
    TOKENVEND_ENCRYPTION_KEYS: `primary:${secretish}`,
  });
  t.is(code, 2);
  t.regex(stderr, /invalid configuration: /);
  t.false(stderr.includes(secretish));
});

test("npm start without caller authentication configured: exit 2, saying how to configure it", async (t) => {
  const { code, stderr } = await start("logLevel: silent\n");
  t.is(code, 2);
  t.regex(
    stderr,
    /invalid configuration: caller authentication is not configured: set auth\.jwt\.issuers/,
  );
});

test("auth.disabled with a listener off loopback: exit 2, naming the listener", async (t) => {
  const { code, stderr } = await start("auth: { disabled: true }\nlogLevel: silent\n", {
    TOKENVEND_HTTP_LISTEN: "0.0.0.0:0",
  });
  t.is(code, 2);
  t.regex(
    stderr,
    /auth\.disabled: true needs every listener on loopback; http\.listen is 0\.0\.0\.0:0/,
  );
});

test("npm run dev refuses production settings: a MongoDB URI, keys, a listener off loopback, by variable or in its config file", async (t) => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ MONGODB_URI: "mongodb://127.0.0.1:1/" }, /refuses production settings: unset MONGODB_URI/],
    [{ TOKENVEND_ENCRYPTION_KEYS: "k:x" }, /unset TOKENVEND_ENCRYPTION_KEYS/],
    [
      { TOKENVEND_GRPC_LISTEN: "0.0.0.0:50051" },
      /loopback only: TOKENVEND_GRPC_LISTEN=0\.0\.0\.0:50051 is not/,
    ],
  ];
  for (const [env, message] of cases) {
    const { code, stderr } = await start("", { TOKENVEND_CONFIG: "", ...env }, "dev");
    t.is(code, 2, JSON.stringify(env));
    t.regex(stderr, message);
  }
  // A config file of its own does not open it up: without authentication, loopback only.
  const fromFile = await start(
    "logLevel: info\nhealth: { listen: 0.0.0.0:0 }\n",
    { TOKENVEND_GRPC_LISTEN: "127.0.0.1:0", TOKENVEND_HTTP_LISTEN: "127.0.0.1:0" },
    "dev",
  );
  t.is(fromFile.code, 2);
  t.regex(fromFile.stderr, /loopback only; health\.listen is 0\.0\.0\.0:0/);
  const healthVariable = await start(
    "",
    { TOKENVEND_CONFIG: "", TOKENVEND_HEALTH_LISTEN: "0.0.0.0:0" },
    "dev",
  );
  t.is(healthVariable.code, 2);
});

test("a start that fails midway (the HTTP port taken) leaves nothing listening: the gRPC listener it had opened is closed again", async (t) => {
  const { createServer } = await import("node:net");
  const { parseConfig } = await import("../src/config.ts");
  const { startServer } = await import("../src/server.ts");
  const listen = (port: number) =>
    new Promise<import("node:net").Server>((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => resolve(s));
    });
  const portOf = (s: import("node:net").Server) => (s.address() as { port: number }).port;
  const taken = await listen(0);
  t.teardown(() => taken.close());
  const probe = await listen(0);
  const grpcPort = portOf(probe);
  await new Promise((r) => probe.close(r));
  const config = parseConfig(
    {
      grpc: { listen: `127.0.0.1:${grpcPort}` },
      http: { listen: `127.0.0.1:${portOf(taken)}` },
      logLevel: "silent",
    },
    { env: {}, readFile: () => "" },
  );
  await t.throwsAsync(startServer({ config }), { message: /EADDRINUSE|address already in use/i });
  const { connect } = await import("node:net");
  const refused = await new Promise<string>((resolve) => {
    const c = connect(grpcPort, "127.0.0.1");
    c.once("connect", () => {
      c.destroy();
      resolve("connected");
    });
    c.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
  });
  t.is(refused, "ECONNREFUSED");
});
