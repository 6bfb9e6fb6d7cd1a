// A real `npm start` replica in its own process, configured by a YAML file,
// reporting its listen addresses from its own JSON log.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const repo = new URL("../..", import.meta.url).pathname;

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
  const child = spawn(process.execPath, ["src/main.ts"], {
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
