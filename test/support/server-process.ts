// A real `npm start` replica in its own process, configured by a YAML file,
// reporting its listen addresses from its own JSON log. It runs npm start's
// exact command (package.json's `scripts.start`) on this pinned Node, without
// npm in between: npm does not pass SIGTERM on, and the tests send it.

import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const repo = new URL("../..", import.meta.url).pathname;

/**
 * An npm script of package.json as argv (`start` by default); it must be a plain `exec node …`
 * command: `exec` so the shell npm runs it in becomes node, and SIGTERM sent to npm reaches the
 * server (no other shell).
 */
export function npmScriptArgv(script: "start" | "dev" = "start"): string[] {
  const pkg = JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as {
    scripts: Record<string, string>;
  };
  const command = pkg.scripts[script] ?? "";
  const [exec, ...argv] = command.trim().split(/\s+/);
  if (exec !== "exec" || argv[0] !== "node" || /["'`$\\|&;<>()*?~]/.test(command)) {
    throw new Error(`npm run ${script} is not a plain \`exec node …\` command: ${command}`);
  }
  return argv;
}

/** `npm start`'s argv. */
export const npmStartArgv = (): string[] => npmScriptArgv("start");

export interface ServerProcess {
  readonly child: ChildProcess;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  readonly grpc: string;
  readonly http: string;
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}

/** Writes `yaml` to a temp file and starts a replica with it (its logLevel must let info through: readiness is read from the log). */
export async function spawnServer(
  yaml: string,
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const dir = await mkdtemp(join(tmpdir(), "tokenvend-replica-"));
  const configPath = join(dir, "config.yaml");
  await writeFile(configPath, yaml);
  // process.execPath: the pinned Node (node_modules/.bin/node), the one `npm start` runs.
  const child = spawn(process.execPath, npmStartArgv().slice(1), {
    cwd: repo,
    env: { ...process.env, TOKENVEND_CONFIG: configPath, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr?.on("data", (b: Buffer) => {
    stderr += b.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  const ready = new Promise<{ grpc: string; http: string }>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      logs.push(entry);
      if (entry.msg === "tokenvend serving") {
        resolve({ grpc: entry.grpc as string, http: entry.http as string });
      }
    });
    void exited.then((code) =>
      reject(new Error(`replica exited early (${code}): ${stderr.slice(-2000)}`)),
    );
  });
  const addr = await ready;
  return {
    child,
    logs,
    ...addr,
    exited,
    kill: (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}
