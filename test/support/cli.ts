// Runs the `tokenvend` command as an operator does: its bin (src/cli/main.ts) in a process of its
// own on the pinned Node, with the environment given (no inherited TOKENVEND_* or MONGODB_URI),
// and resolves with its exit code and output.

import { spawn } from "node:child_process";

const repo = new URL("../..", import.meta.url).pathname;

export interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** The environment without anything that configures tokenvend, plus `env`. */
export function cleanEnv(env: Record<string, string> = {}): Record<string, string> {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k, v]) =>
        v !== undefined &&
        !k.startsWith("TOKENVEND_") &&
        !k.startsWith("OTEL_") &&
        k !== "MONGODB_URI",
    ),
  ) as Record<string, string>;
  return { ...base, ...env };
}

export function tokenvend(
  args: readonly string[],
  opts: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["src/cli/main.ts", ...args], {
      cwd: repo,
      env: cleanEnv(opts.env),
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}
