// The one way scripts/ run a command to completion, in the repo unless told otherwise: stdout is
// returned, and shown as it comes with `echo` (stderr then goes straight to ours). A non-zero
// exit, a signal or a failed start rejects with a RunError that quotes the end of the output not
// shown. The timeout is our own unref'd timer, cleared on exit and on a failed start: spawn's
// `timeout` is cleared only on exit, so a command that could not start (ENOENT) used to hold the
// caller's event loop open until it fired.

import { spawn } from "node:child_process";
import * as path from "node:path";

export const REPO_ROOT = path.resolve(import.meta.dirname, "../..");

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Show the output as it comes, instead of quoting its end on failure. */
  echo?: boolean;
  /** Killed (SIGKILL) after this long; default 15 minutes, for a cold `go install`. */
  timeoutMs?: number;
}

export class RunError extends Error {
  /** What the command printed on stdout before it failed. */
  readonly stdout: string;
  constructor(message: string, stdout: string) {
    super(message);
    this.stdout = stdout;
  }
}

export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const { cwd = REPO_ROOT, env = process.env, echo = false, timeoutMs = 15 * 60_000 } = opts;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd,
      env,
      stdio: ["ignore", "pipe", echo ? "inherit" : "pipe"],
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs).unref();
    let stdout = "";
    let output = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      if (echo) process.stdout.write(d);
      else output += d;
    });
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    const fail = (why: string) => {
      clearTimeout(timer);
      const shown = output.trimEnd().split("\n").slice(-40).join("\n");
      reject(
        new RunError(`\`${[cmd, ...args].join(" ")}\` ${why}${shown && `:\n${shown}`}`, stdout),
      );
    };
    child.on("error", (err: NodeJS.ErrnoException) =>
      fail(err.code === "ENOENT" ? `could not start: ${cmd} is not on PATH` : err.message),
    );
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else
        fail(timedOut ? `timed out after ${timeoutMs} ms` : `failed (${signal ?? `exit ${code}`})`);
    });
  });
}

/** Whether pid names a live process (EPERM: alive, another user's). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
