// What the file store's tests share: a key, temp directories removed after each test file, and
// child node processes that open a store in a directory (to hold its lock, or to be killed in the
// middle of a write).

import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import type { TestFn } from "ava";
import { generateKey, parseKeyring } from "../../src/store/sealing.ts";

export const KEYS = `a:${generateKey()}`;
export const ring = parseKeyring(KEYS);
const FILE_STORE_URL = pathToFileURL(path.resolve("src/store/file-store.ts")).href;
const SEALING_URL = pathToFileURL(path.resolve("src/store/sealing.ts")).href;

/** A maker of store directory paths (not yet created) under temp dirs removed after `test`'s file. */
export function tempDirs(test: TestFn): () => Promise<string> {
  const dirs: string[] = [];
  test.after.always(async () => {
    for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  });
  return async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-file-store-"));
    dirs.push(dir);
    return path.join(dir, "store"); // created by the store
  };
}

/** Runs `code` (an ES module) in a child node; lines it prints come back one by one. */
export function child(code: string, env: Record<string, string> = {}) {
  const proc: ChildProcess = spawn(process.execPath, ["--input-type=module", "-e", code], {
    env: { ...process.env, TOKENVEND_ENCRYPTION_KEYS: KEYS, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  // "close": after the exit and after every line it printed has been read.
  const exited = new Promise<void>((resolve) => proc.once("close", () => resolve()));
  return { proc, lines, exited, stderr: () => stderr };
}

/**
 * Resolves at the first line of `c` that `match` accepts. Rejects, with its stderr, when the child
 * exits first or prints no such line within `timeoutMs`, rather than waiting for AVA's timeout.
 */
export function waitForLine(
  c: ReturnType<typeof child>,
  match: (line: string) => boolean,
  timeoutMs = 30_000,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.lines.off("line", onLine);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onLine = (line: string) => {
      if (match(line)) settle();
    };
    const timer = setTimeout(
      () => settle(new Error(`child printed no awaited line in ${timeoutMs} ms; ${c.stderr()}`)),
      timeoutMs,
    );
    c.lines.on("line", onLine);
    void c.exited.then(() =>
      settle(new Error(`child exited before the awaited line; ${c.stderr()}`)),
    );
  });
}

/** The lock file names this process and a fresh token of its own. */
export const ourLock = new RegExp(`^${process.pid} [0-9a-f-]{36}\\n$`);

export const openInChild = (dir: string) => `
  import { createFileStore } from ${JSON.stringify(FILE_STORE_URL)};
  import { parseKeyring } from ${JSON.stringify(SEALING_URL)};
  const store = await createFileStore({
    dir: ${JSON.stringify(dir)},
    keyring: parseKeyring(process.env.TOKENVEND_ENCRYPTION_KEYS),
  });
`;
