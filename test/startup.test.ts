// A replica that cannot start says why and exits: 2 for a configuration error
// (an option named with what it must be, a persistent store without a key),
// never serving with a half-valid config.

import { spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { npmStartArgv } from "./support/server-process.ts";

const repo = new URL("..", import.meta.url).pathname;

/** Runs npm start's command with `yaml` as its config; resolves with its exit code and stderr. */
async function start(yaml: string, env: Record<string, string> = {}) {
  const dir = await mkdtemp(join(tmpdir(), "tokenvend-startup-"));
  const configPath = join(dir, "config.yaml");
  await writeFile(configPath, yaml);
  const child = spawn(process.execPath, npmStartArgv().slice(1), {
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
  const { code, stderr } = await start("syncInterval: soon\n");
  t.is(code, 2);
  t.regex(stderr, /invalid configuration: syncInterval must be a duration such as "500ms"/);
});

test("a MongoDB store without an encryption key: exit 2, saying how to make one", async (t) => {
  const { code, stderr } = await start("logLevel: silent\n", {
    MONGODB_URI: "mongodb://127.0.0.1:1/",
  });
  t.is(code, 2);
  t.regex(stderr, /invalid configuration: .*needs a key: set TOKENVEND_ENCRYPTION_KEYS/);
});

test("a malformed encryption key: exit 2, without echoing the key", async (t) => {
  const secretish = "not-a-valid-key-material-1234567890";
  const { code, stderr } = await start("logLevel: silent\n", {
    TOKENVEND_DATA_DIR: await mkdtemp(join(tmpdir(), "tokenvend-startup-data-")),
    TOKENVEND_ENCRYPTION_KEYS: `primary:${secretish}`,
  });
  t.is(code, 2);
  t.regex(stderr, /invalid configuration: /);
  t.false(stderr.includes(secretish));
});
