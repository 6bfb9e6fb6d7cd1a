// Builds a thing once per state of its inputs. .cache/<name>.stamp records a hash of the input
// files (globs under the repo) and of `salt` (flags, versions: what is not in a file); while it
// matches and the outputs are there, nothing runs, not even a process. A build runs under
// .cache/<name>.lock, so concurrent callers (AVA workers, two `npm test`s) build once.

import { createHash } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { withLock } from "./lock.ts";
import { REPO_ROOT } from "./run.ts";

export const CACHE_DIR = path.join(REPO_ROOT, ".cache");

export interface Buildable {
  name: string;
  /** Globs relative to the repo root; each must match a file. */
  inputs: string[];
  salt?: string;
  /** Executable files the build makes. */
  outputs: string[];
  build(): Promise<unknown>;
}

export async function buildOnce({ name, inputs, salt = "", outputs, build }: Buildable) {
  const stamp = path.join(CACHE_DIR, `${name}.stamp`);
  const hash = await hashOf(inputs, `${salt} ${process.platform}-${process.arch}`);
  const current = async () =>
    (await fs.readFile(stamp, "utf8").catch(() => "")) === hash &&
    (await Promise.all(outputs.map(isExecutable))).every(Boolean);
  if (await current()) return;
  await withLock(path.join(CACHE_DIR, `${name}.lock`), async () => {
    if (await current()) return; // built by another process meanwhile
    await fs.rm(stamp, { force: true }); // an interrupted build is redone
    process.stderr.write(`${name}: building (a first build can take minutes)…\n`);
    const started = performance.now();
    await build();
    await fs.writeFile(stamp, hash);
    process.stderr.write(
      `${name}: built in ${((performance.now() - started) / 1000).toFixed(1)}s\n`,
    );
  });
}

async function hashOf(globs: string[], salt: string): Promise<string> {
  const h = createHash("sha256").update(`${salt}\n`);
  for (const glob of globs) {
    const files: string[] = [];
    for await (const file of fs.glob(glob, { cwd: REPO_ROOT })) files.push(file);
    files.sort();
    if (files.length === 0) throw new Error(`no file matches ${glob}`);
    for (const file of files) {
      const bytes = await fs.readFile(path.join(REPO_ROOT, file));
      h.update(`${file}\0${bytes.length}\0`).update(bytes);
    }
  }
  return h.digest("hex");
}

async function isExecutable(file: string): Promise<boolean> {
  // Follows links: a venv whose base Python went away fails.
  return fs.access(file, fs.constants.X_OK).then(
    () => true,
    () => false,
  );
}
