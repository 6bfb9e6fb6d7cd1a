// `npm test`: every check and test, in order, stopping at the first failing step.
//
//   1. typecheck      tsc --noEmit
//   2. proto          buf lint; buf breaking against the previous state of main (see breakingBase)
//   3. generated      gen/ is exactly what `npm run generate` makes from proto/ (generated into a
//                     temp dir and compared byte for byte: the work tree is never written)
//   4. lint           biome check . (lint and format, no writes)
//   5. tools          installs, once and cached under .cache/ (scripts/tools.ts): grpcurl and ghz
//                     (go install, pinned), the Python venv (grpcio, grpcio-tools, protobuf), and
//                     the FerretDB wrapper (scripts/ferretdb.ts; skipped when MONGODB_URI is set)
//   6. tests          AVA, with TOKENVEND_TOOLS_BIN, TOKENVEND_PYTHON and .cache/go/bin first on PATH
//
// The last line printed is always `N passed, N failed` (`, N skipped` added when tests were
// skipped or todo), and the exit code is non-zero when anything failed. A failed step 1–5 ends
// with `0 passed, 1 failed`.
//
// AVA runs with its TAP reporter, streamed to the console as it comes (test output goes to
// stderr), and the TAP is parsed for the counts: AVA 7 prints no such line and has no custom
// reporters. Every `ok` is a pass, `ok … # SKIP` a skip, `not ok … # TODO` a todo (counted as
// skipped), any other `not ok` a failure (failed tests and hooks, uncaught exceptions, timeouts,
// crashed workers, files with no tests). Tests that never ran because the run stopped early are
// failures too (from AVA's closing `# fail` count), and a non-zero exit of AVA with no failure
// parsed (bad arguments, no test files matched) counts as one failure.
//
// Arguments:
//   npm test -- test/foo.test.ts …   anything else is passed to AVA: files or globs, --match, …
//   npm test -- --quick …            skips steps 1–4 (typecheck, proto, generated, lint), for a
//                                    quick edit-test loop; the tools step still runs (cached)
//
// Environment: TOKENVEND_BREAKING_AGAINST=<git ref> sets what buf breaking compares against.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { ensureFerretdbBinary } from "./ferretdb.ts";
import { ensureAllTools, REPO_ROOT, toolEnv } from "./tools.ts";

const NODE_BIN = path.join(REPO_ROOT, "node_modules", ".bin");
const AVA_CLI = path.join(REPO_ROOT, "node_modules", "ava", "entrypoints", "cli.mjs");

// The project's own tools (tsc, buf, biome, protoc-gen-es, node 24) first, as under `npm run`.
process.env.PATH = [NODE_BIN, ...(process.env.PATH ?? "").split(path.delimiter)]
  .filter((p, i, all) => p && all.indexOf(p) === i)
  .join(path.delimiter);

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: string, s: string): string => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = (s: string) => paint("1", s);
const green = (s: string) => paint("32", s);
const red = (s: string) => paint("31", s);
const dim = (s: string) => paint("2", s);

const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};

const seconds = (startedMs: number): string =>
  `${((performance.now() - startedMs) / 1000).toFixed(1)}s`;

/** A step failed: its message is printed, then the run ends. */
class StepFailure extends Error {}

// ---------------------------------------------------------------------------------------------
// Processes

/** Runs a command with the console attached; rejects with a StepFailure on a non-zero exit. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  say(dim(`$ ${[cmd, ...args].join(" ")}`));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", "inherit", "inherit"],
    });
    child.on("error", (err) => reject(new StepFailure(`${cmd}: ${err.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) resolve();
      else
        reject(
          new StepFailure(`\`${cmd} ${args.join(" ")}\` failed (${signal ?? `exit ${code}`})`),
        );
    });
  });
}

/** A git command's trimmed stdout, or undefined when it fails (no repo, unknown ref, …). */
function git(args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn("git", args, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    child.on("error", () => resolve(undefined));
    child.on("close", (code) => resolve(code === 0 ? out.trim() : undefined));
  });
}

// ---------------------------------------------------------------------------------------------
// Steps 1–4

/**
 * What `buf breaking` compares the work tree against:
 * - $TOKENVEND_BREAKING_AGAINST, when set (any git ref);
 * - on a branch other than main: the merge-base with main (local `main`, else `origin/main`),
 *   i.e. main's state the branch started from;
 * - on main's tip itself (a CI clone of main, or a developer on main): HEAD~1, so the last
 *   commit and any uncommitted change are checked;
 * - skipped, saying why, when there is nothing earlier to compare against (first commit, a
 *   shallow clone, not a git work tree) or the proto module did not exist there yet.
 */
async function breakingBase(): Promise<{ ref: string; why: string } | { skip: string }> {
  const head = await git(["rev-parse", "--verify", "-q", "HEAD^{commit}"]);
  if (head === undefined) return { skip: "not a git work tree, or no commit yet" };
  let base: string | undefined;
  let why: string;
  const override = process.env.TOKENVEND_BREAKING_AGAINST;
  if (override) {
    base = await git(["rev-parse", "--verify", "-q", `${override}^{commit}`]);
    if (base === undefined)
      throw new StepFailure(`TOKENVEND_BREAKING_AGAINST=${override} is not a commit`);
    why = `TOKENVEND_BREAKING_AGAINST=${override}`;
  } else {
    let mainName: string | undefined;
    let main: string | undefined;
    for (const name of ["main", "origin/main"]) {
      main = await git(["rev-parse", "--verify", "-q", `${name}^{commit}`]);
      if (main !== undefined) {
        mainName = name;
        break;
      }
    }
    if (main !== undefined && main !== head) {
      base = await git(["merge-base", "HEAD", main]);
      if (base === undefined) return { skip: `HEAD has no common history with ${mainName}` };
      why = `the merge-base of HEAD and ${mainName}`;
    } else {
      base = await git(["rev-parse", "--verify", "-q", "HEAD~1^{commit}"]);
      if (base === undefined)
        return { skip: "HEAD has no parent (first commit, or a shallow clone): nothing earlier" };
      why = main === undefined ? "HEAD~1 (no main branch here)" : "HEAD~1 (HEAD is main's tip)";
    }
  }
  if ((await git(["cat-file", "-e", `${base}:buf.yaml`])) === undefined)
    return { skip: `buf.yaml did not exist yet at ${base.slice(0, 12)} (${why})` };
  return { ref: base, why };
}

async function checkProto(): Promise<void> {
  await run("buf", ["lint"]);
  const base = await breakingBase();
  if ("skip" in base) {
    say(`buf breaking: skipped: ${base.skip}`);
    return;
  }
  say(`buf breaking: against ${base.ref.slice(0, 12)}, ${base.why}`);
  await run("buf", ["breaking", "--against", `.git#ref=${base.ref}`]);
}

async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const rel = path.join(prefix, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path.join(dir, entry.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

/** Regenerates into a temp dir, as `npm run generate` does into gen/, and compares bytes. */
async function checkGenerated(): Promise<void> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-gen-"));
  try {
    // Mirrors package.json's "generate": buf.gen.yaml writes to gen/, here under tmp.
    await run("buf", ["generate", "--output", tmp]);
    await run("buf", ["build", "-o", path.join(tmp, "gen", "tokenvend.binpb")]);
    const fresh = path.join(tmp, "gen");
    const committed = path.join(REPO_ROOT, "gen");
    const [want, have] = await Promise.all([
      listFiles(fresh),
      existsSync(committed) ? listFiles(committed) : Promise.resolve<string[]>([]),
    ]);
    const problems: string[] = [];
    for (const f of want) {
      if (!have.includes(f)) problems.push(`missing: gen/${f}`);
      else {
        const [a, b] = await Promise.all([
          fs.readFile(path.join(fresh, f)),
          fs.readFile(path.join(committed, f)),
        ]);
        if (!a.equals(b)) problems.push(`out of date: gen/${f}`);
      }
    }
    for (const f of have) if (!want.includes(f)) problems.push(`not generated: gen/${f}`);
    if (problems.length > 0) {
      for (const p of problems) say(`  ${p}`);
      throw new StepFailure(
        "gen/ is not what proto/ generates: run `npm run generate` and commit gen/",
      );
    }
    say(`gen/ matches proto/ (${want.length} files)`);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Step 5

async function installTools(): Promise<void> {
  const log = (line: string) => say(line);
  try {
    const [tools] = await Promise.all([
      ensureAllTools(log),
      process.env.MONGODB_URI ? Promise.resolve(undefined) : ensureFerretdbBinary(),
    ]);
    for (const [name, bin] of Object.entries(tools.goTools)) say(`${name}: ${bin}`);
    say(`python: ${tools.python}`);
    if (!process.env.MONGODB_URI)
      say("ferretdb: built (tests start it; MONGODB_URI to use a MongoDB)");
  } catch (err) {
    throw new StepFailure(err instanceof Error ? err.message : String(err));
  }
}

// ---------------------------------------------------------------------------------------------
// Step 6: AVA

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

/** Parses AVA's TAP as it streams; see the top of this file for what counts as what. */
class TapCounter {
  passed = 0;
  failed = 0;
  skipped = 0;
  todo = 0;
  closingFail: number | undefined;
  private partial = "";

  push(chunk: string): void {
    const lines = (this.partial + chunk).split("\n");
    this.partial = lines.pop() ?? "";
    for (const line of lines) this.line(line);
  }

  end(): void {
    if (this.partial) this.line(this.partial);
    this.partial = "";
  }

  private line(raw: string): void {
    const line = raw.replace(/\r$/, "");
    const test = /^(ok|not ok)\b(.*)$/.exec(line);
    if (test) {
      const directive = /#\s*(SKIP|TODO)\b[^#]*$/i.exec(test[2] ?? "")?.[1]?.toUpperCase();
      if (test[1] === "ok") {
        if (directive === "SKIP") this.skipped++;
        else this.passed++;
      } else if (directive === "TODO") this.todo++;
      else this.failed++;
      return;
    }
    const fail = /^# fail (\d+)$/.exec(line);
    if (fail) this.closingFail = Number(fail[1]);
  }

  counts(): Counts {
    // AVA's closing `# fail` counts todo too, and tests that never ran (no line of their own).
    const notRun = this.closingFail === undefined ? 0 : this.closingFail - this.todo;
    return {
      passed: this.passed,
      failed: Math.max(this.failed, notRun),
      skipped: this.skipped + this.todo,
    };
  }
}

function runAva(avaArgs: string[]): Promise<Counts> {
  // In CI nothing needs changing: AVA detects CI itself, and never fails fast unless told to.
  const args = [AVA_CLI, "--tap", ...avaArgs];
  say(dim(`$ ava ${args.slice(1).join(" ")}`));
  const counter = new TapCounter();
  return new Promise((resolve) => {
    // process.execPath: the workers run on this same Node 24.
    const child = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      env: { ...process.env, ...toolEnv() },
      stdio: ["ignore", "pipe", "inherit"],
    });
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      process.stdout.write(chunk);
      counter.push(chunk);
    });
    child.on("error", (err) => {
      say(red(`could not start AVA: ${err.message}`));
      resolve({ passed: 0, failed: 1, skipped: 0 });
    });
    child.on("close", (code, signal) => {
      counter.end();
      const counts = counter.counts();
      if ((code !== 0 || signal) && counts.failed === 0) {
        say(
          red(
            `AVA exited with ${signal ?? `code ${code}`} and no failed test: counted as one failure`,
          ),
        );
        counts.failed = 1;
      }
      resolve(counts);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Main

function summary({ passed, failed, skipped }: Counts): string {
  return `${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}`;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const quick = argv.includes("--quick");
  const avaArgs = argv.filter((a) => a !== "--quick");

  const steps: { name: string; run: () => Promise<void> }[] = [
    ...(quick
      ? []
      : [
          { name: "typecheck (tsc --noEmit)", run: () => run("tsc", ["--noEmit"]) },
          { name: "proto (buf lint, buf breaking)", run: checkProto },
          { name: "generated code (gen/ up to date)", run: checkGenerated },
          { name: "lint and format (biome check .)", run: () => run("biome", ["check", "."]) },
        ]),
    { name: "tools (grpcurl, ghz, Python venv, FerretDB)", run: installTools },
  ];
  const total = steps.length + 1;
  const started = performance.now();
  for (const [i, step] of steps.entries()) {
    say(bold(`\n━━ [${i + 1}/${total}] ${step.name}`));
    const t0 = performance.now();
    try {
      await step.run();
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      say(red(`✘ ${step.name}: ${msg}`));
      if (!(err instanceof StepFailure) && err instanceof Error && err.stack) say(dim(err.stack));
      say(red(`\nstopped at step ${i + 1}/${total}; no test ran`));
      say(summary({ passed: 0, failed: 1, skipped: 0 }));
      return 1;
    }
    say(green(`✔ ${step.name} ${dim(`(${seconds(t0)})`)}`));
  }
  say(dim(`\nchecks and setup took ${seconds(started)}`));

  say(bold(`\n━━ [${total}/${total}] tests (AVA)`));
  const t0 = performance.now();
  const counts = await runAva(avaArgs);
  say(dim(`\ntests took ${seconds(t0)}, everything ${seconds(started)}`));
  say(summary(counts));
  return counts.failed > 0 ? 1 : 0;
}

process.exitCode = await main();
