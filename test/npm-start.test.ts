// `npm start` and `npm run dev` run the server as npm's direct child (`exec node …` in
// package.json), so a process manager that sends SIGTERM to npm itself reaches the server: it
// drains, exits 0, and nothing is left running. Before, npm signalled its `sh -c` and the node
// process kept running, orphaned, without a drain.

import { spawn } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import { cleanEnv } from "./support/cli.ts";

const repo = new URL("..", import.meta.url).pathname;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

for (const script of ["start", "dev"] as const) {
  test(`SIGTERM to \`npm ${script === "start" ? "start" : "run dev"}\` itself drains the server and leaves no process`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "tokenvend-npm-"));
    const env: Record<string, string> = {
      TOKENVEND_GRPC_LISTEN: "127.0.0.1:0",
      TOKENVEND_HTTP_LISTEN: "127.0.0.1:0",
    };
    if (script === "start") {
      await writeFile(join(dir, "config.yaml"), "logLevel: info\nauth: { disabled: true }\n");
      env.TOKENVEND_CONFIG = join(dir, "config.yaml");
    }
    const npm = spawn("npm", script === "start" ? ["start"] : ["run", "dev"], {
      cwd: repo,
      env: cleanEnv(env),
      stdio: ["ignore", "pipe", "pipe"],
    });
    t.teardown(() => {
      if (npm.exitCode === null) npm.kill("SIGKILL");
    });
    const messages: string[] = [];
    const lines = createInterface({ input: npm.stdout });
    // Every line read: the pipe closed (npm and the server both gone) and readline drained it.
    const allRead = new Promise<void>((resolve) => lines.once("close", () => resolve()));
    const serving = new Promise<void>((resolve, reject) => {
      lines.on("line", (line) => {
        const msg = /"msg":"([^"]*)"/.exec(line)?.[1];
        if (msg !== undefined) messages.push(msg);
        // Dev mode stores its demo session after it serves, then says it is ready.
        if (script === "start" ? msg === "tokenvend serving" : line.includes("dev mode is ready")) {
          resolve();
        }
      });
      npm.once("exit", (code) => reject(new Error(`npm exited early (${code})`)));
    });
    await serving;
    // npm's child is the server itself: no shell in between.
    const children = (await readFile(`/proc/${npm.pid}/task/${npm.pid}/children`, "utf8"))
      .trim()
      .split(/\s+/)
      .map(Number);
    t.is(children.length, 1);
    const server = children[0] as number;
    const cmdline = (await readFile(`/proc/${server}/cmdline`, "utf8")).split("\0");
    t.true(cmdline.includes("src/cli/main.ts"), cmdline.join(" "));
    t.true(cmdline.includes(script === "start" ? "serve" : "dev"));

    // "close", not "exit": npm's output is read to its end, the server's last log lines included.
    const exited = new Promise<number | null>((resolve) => npm.once("close", resolve));
    npm.kill("SIGTERM");
    await exited;
    for (let i = 0; i < 50 && alive(server); i++) await sleep(100);
    t.false(alive(server), "the server process is gone");
    await allRead;
    t.true(messages.includes("shutting down"), messages.join(", "));
    t.true(messages.includes("stopped"), messages.join(", "));
  });
}
