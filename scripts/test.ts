// `npm test`: every check and test, in order, stopping at the first failing step.
//
//   1. typecheck   tsc --noEmit
//   2. proto       buf lint; buf breaking against main (see breakingAgainst)
//   3. generated   gen/ is what `npm run generate` makes from proto/ (made in a temp dir, compared)
//   4. lint        biome check . (lint and format, no writes)
//   5. tools       built once and cached under .cache/: the Go tools, the Go client and the Python
//                  venv (scripts/tools.ts), FerretDB (scripts/ferretdb.ts; not with MONGODB_URI)
//   6. tests       AVA, with the tools' environment (toolEnv)
//
// The last line is always `N passed, N failed` (`, N skipped` when tests were skipped or todo),
// and the exit code is non-zero when anything failed; a failed step 1–5 ends with
// `0 passed, 1 failed`. AVA 7 prints no such line and has no custom reporters: it runs with its TAP
// reporter, shown as it comes and read by tap-parser (node-tap's). Tests that never ran (after a
// failed hook, a crashed worker) count as failed, from AVA's closing `# fail` count; an AVA that
// exits non-zero with no failure counted (bad arguments; its TAP reporter crashes on a timeout or
// a test's process.exit) counts one.
//
//   npm test -- test/foo.test.ts …   anything else is passed to AVA: files, globs, --match, …
//   npm test -- --quick …            skips steps 1–4, for a quick edit-test loop

import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { Parser, type Result } from "tap-parser";
import { ensureFerretdb } from "./ferretdb.ts";
import { REPO_ROOT, RunError, run } from "./lib/run.ts";
import { ensureAllTools, toolEnv } from "./tools.ts";

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = paint(1);
const green = paint(32);
const red = paint(31);
const dim = paint(2);
const say = (line: string) => process.stdout.write(`${line}\n`);
const seconds = (startedMs: number) => `${((performance.now() - startedMs) / 1000).toFixed(1)}s`;

/**
 * buf's git input for main's tip (local, else origin's). On main itself (CI runs on a clone of
 * main) comparing main with itself checks nothing: HEAD~1 there, so the last commit and any
 * uncommitted change. Skipped, saying why, when there is nothing earlier (first commit, shallow
 * clone, no git).
 */
async function breakingAgainst(): Promise<string | undefined> {
  const commit = (rev: string) =>
    run("git", ["rev-parse", "--verify", "-q", `${rev}^{commit}`]).then(
      (out) => out.trim(),
      () => undefined,
    );
  const mains = ["main", "origin/main"];
  const [head, parent, ...tips] = await Promise.all(["HEAD", "HEAD~1", ...mains].map(commit));
  const i = tips.findIndex((tip) => tip !== undefined);
  if (i >= 0 && tips[i] !== head) {
    say(`buf breaking: against ${mains[i]}`);
    return `.git#branch=${mains[i]}`;
  }
  if (parent === undefined) {
    say("buf breaking: skipped: no earlier commit here (first commit, shallow clone or no git)");
    return undefined;
  }
  say(`buf breaking: against HEAD~1 (${i < 0 ? "no main branch here" : "HEAD is main"})`);
  return ".git#ref=HEAD~1";
}

async function checkProto(): Promise<void> {
  await run("buf", ["lint"], { echo: true });
  const against = await breakingAgainst();
  if (against !== undefined) await run("buf", ["breaking", "--against", against], { echo: true });
}

async function checkGenerated(): Promise<void> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-gen-"));
  try {
    // package.json's "generate", with buf.gen.yaml's gen/ under tmp.
    await run("buf", ["generate", "--output", tmp]);
    await run("buf", ["build", "-o", path.join(tmp, "gen", "tokenvend.binpb")]);
    await run("diff", ["-r", "-q", path.join(tmp, "gen"), "gen"]).catch((err: RunError) => {
      throw new RunError(
        `gen/ is not what proto/ generates (npm run generate): ${err.message}`,
        "",
      );
    });
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

async function installTools(): Promise<void> {
  const mongo = process.env.MONGODB_URI;
  await Promise.all([ensureAllTools(), mongo ? undefined : ensureFerretdb()]);
  say(
    mongo ? "tests use MONGODB_URI" : "FerretDB built (tests start it; MONGODB_URI for a MongoDB)",
  );
}

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

async function runAva(avaArgs: string[]): Promise<Counts> {
  // process.execPath: AVA and its workers run on this same pinned Node.
  const ava = [path.join(REPO_ROOT, "node_modules/ava/entrypoints/cli.mjs"), "--tap", ...avaArgs];
  let tap: string;
  let exitError: string | undefined;
  try {
    tap = await run(process.execPath, ava, { echo: true, env: { ...process.env, ...toolEnv() } });
  } catch (err) {
    if (!(err instanceof RunError)) throw err;
    tap = err.stdout;
    exitError = err.message;
  }
  const counts: Counts = { passed: 0, failed: 0, skipped: 0 };
  let todo = 0;
  let closing: number | undefined; // AVA's closing `# fail`: failed, never ran, crashed, and todo
  const parser = new Parser();
  parser.on("assert", (r: Result) => {
    if (r.todo) todo++;
    if (r.skip || r.todo) counts.skipped++;
    else if (r.ok) counts.passed++;
    else counts.failed++;
  });
  parser.on("comment", (line: string) => {
    const fail = /^# fail (\d+)/.exec(line)?.[1];
    if (fail !== undefined) closing = Number(fail);
  });
  parser.end(tap);
  counts.failed = Math.max(counts.failed, (closing ?? 0) - todo);
  if (exitError === undefined) return counts;
  if (closing === undefined)
    say(
      red(
        "AVA stopped before its closing counts: bad arguments, or its TAP reporter crashed (AVA 7's" +
          " does on a timeout or a test's process.exit; `npx ava FILE` names the test)",
      ),
    );
  if (counts.failed === 0) {
    say(red(`${exitError} with no failed test: counted as one failure`));
    counts.failed = 1;
  }
  return counts;
}

function summary({ passed, failed, skipped }: Counts): string {
  return `${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}`;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const quick = argv.includes("--quick");
  type Step = readonly [name: string, run: () => Promise<unknown>];
  const checks: Step[] = [
    ["typecheck (tsc --noEmit)", () => run("tsc", ["--noEmit"], { echo: true })],
    ["proto (buf lint, buf breaking)", checkProto],
    ["generated code (gen/ up to date)", checkGenerated],
    ["lint and format (biome check .)", () => run("biome", ["check", "."], { echo: true })],
  ];
  const steps: Step[] = [
    ...(quick ? [] : checks),
    ["tools (grpcurl, ghz, Go client, Python venv, FerretDB)", installTools],
  ];
  const total = steps.length + 1;
  const started = performance.now();
  for (const [i, [name, step]] of steps.entries()) {
    say(bold(`\n━━ [${i + 1}/${total}] ${name}`));
    const t0 = performance.now();
    try {
      await step();
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      say(red(`✘ ${name}: ${error.message}`));
      if (!(error instanceof RunError) && error.stack) say(dim(error.stack));
      say(red(`\nstopped at step ${i + 1}/${total}; no test ran`));
      say(summary({ passed: 0, failed: 1, skipped: 0 }));
      return 1;
    }
    say(green(`✔ ${name} ${dim(`(${seconds(t0)})`)}`));
  }
  say(bold(`\n━━ [${total}/${total}] tests (AVA)`));
  const t0 = performance.now();
  const counts = await runAva(argv.filter((a) => a !== "--quick"));
  say(dim(`\ntests took ${seconds(t0)}, everything ${seconds(started)}`));
  say(summary(counts));
  return counts.failed > 0 ? 1 : 0;
}

process.exitCode = await main();
