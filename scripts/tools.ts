// The external tools the tests drive, installed once and cached under .cache/:
//
//   .cache/go/bin/grpcurl, .cache/go/bin/ghz   `go install` of pinned versions (GOBIN), with the
//                                              version stamped in (`grpcurl -version`, `ghz --version`)
//   .cache/go/bin/protoc-gen-go{,-grpc}        the same, for buf.gen.go.yaml
//   .cache/go/bin/tokenvend-goclient           tools/goclient built on Go stubs that buf generates
//                                              from proto/ into tools/goclient/gen (git-ignored)
//   .cache/py/bin/python                       a venv with pinned grpcio, grpcio-tools and protobuf
//
// A tool is reinstalled only when its pin changes (a stamp file beside it records what was
// installed) or it is missing, and the Go client is rebuilt only when a hash of its inputs
// (tools/goclient, proto/, the buf template, the pins) changes, so a cached check spawns no
// process. Go modules come from the default GOMODCACHE, shared by every checkout on the machine.
// Several processes may call these at once (engineers share a work tree): one installs under a
// lock, the others wait for it.
//
// API:  ensureGoTool(name), ensureGoTools(), ensureGoClient(), ensurePythonVenv(), ensureAllTools(),
//       toolEnv()
// CLI:  node scripts/tools.ts            installs everything (also what `npm test` does first)
//       node scripts/tools.ts --env      … then prints the environment the tests get, as `export` lines

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive } from "../src/process-alive.ts";

export const REPO_ROOT = path.resolve(import.meta.dirname, "..");
export const CACHE_DIR = path.join(REPO_ROOT, ".cache");
export const GO_DIR = path.join(CACHE_DIR, "go");
/** Where `go install` puts the Go tools (GOBIN). Tests get it as TOKENVEND_TOOLS_BIN and first on PATH. */
export const GO_BIN_DIR = path.join(GO_DIR, "bin");
/** The Python venv. Tests get its interpreter as TOKENVEND_PYTHON. */
export const PY_VENV_DIR = path.join(CACHE_DIR, "py");
export const PY_VENV_PYTHON = path.join(PY_VENV_DIR, "bin", "python");

/**
 * Pinned Go tools. All build with Go 1.25+ (grpcurl v1.9.4's go.mod asks for 1.25; checked
 * with 1.26). `go install` sets no version, so it is stamped in with -X main.version, the way
 * the projects' release builds do (the protoc plugins carry theirs in the code; -X is a no-op).
 * protoc-gen-go is the version of the protobuf runtime in tools/goclient/go.mod (generated code
 * checks it; test/go-client.test.ts too).
 */
export const GO_TOOLS = {
  grpcurl: { pkg: "github.com/fullstorydev/grpcurl/cmd/grpcurl", version: "v1.9.4" },
  ghz: { pkg: "github.com/bojand/ghz/cmd/ghz", version: "v0.121.0" },
  "protoc-gen-go": { pkg: "google.golang.org/protobuf/cmd/protoc-gen-go", version: "v1.36.12" },
  "protoc-gen-go-grpc": {
    pkg: "google.golang.org/grpc/cmd/protoc-gen-go-grpc",
    version: "v1.6.2",
  },
} as const;
export type GoToolName = keyof typeof GO_TOOLS;

/** Pinned Python packages for the Python client tests (stubs generated with grpcio-tools). */
export const PYTHON_REQUIREMENTS = ["grpcio==1.85.1", "grpcio-tools==1.85.1", "protobuf==7.36.2"];
/** Imported once after installing, to prove the venv works before it is stamped. */
const PYTHON_IMPORT_CHECK = "import grpc, grpc_tools.protoc, google.protobuf";

const INSTALL_TIMEOUT_MS = 15 * 60_000;

type Log = (line: string) => void;
const stderrLog: Log = (line) => process.stderr.write(`${line}\n`);

// ---------------------------------------------------------------------------------------------
// Helpers

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; what: string },
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? REPO_ROOT,
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    // Our own timer, not spawn's `timeout`: that one is cleared only on exit, so a command
    // that could not start (ENOENT) held the caller's event loop open for 15 minutes.
    const timer = setTimeout(() => child.kill("SIGKILL"), INSTALL_TIMEOUT_MS);
    let out = "";
    const collect = (d: string) => {
      out += d;
    };
    child.stdout.setEncoding("utf8").on("data", collect);
    child.stderr.setEncoding("utf8").on("data", collect);
    child.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        err.code === "ENOENT"
          ? new Error(`${opts.what}: \`${cmd}\` is not on PATH (${hintFor(cmd)})`)
          : err,
      );
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else
        reject(
          new Error(
            `${opts.what}: \`${cmd} ${args.join(" ")}\` failed (${signal ?? `exit ${code}`}):\n${tail(out)}`,
          ),
        );
    });
  });
}

function hintFor(cmd: string): string {
  if (cmd === "go") return "install Go >= 1.26";
  if (cmd.startsWith("python")) return "install Python >= 3.9 with its venv module";
  return "install it";
}

function tail(text: string, lines = 40): string {
  const all = text.trimEnd().split("\n");
  return (all.length > lines ? ["…", ...all.slice(-lines)] : all).join("\n");
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, "utf8");
  } catch {
    return undefined;
  }
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await fs.access(file, fs.constants.X_OK); // follows symlinks: a venv whose base Python went fails
    return true;
  } catch {
    return false;
  }
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, text);
  await fs.rename(tmp, file);
}

/** Runs fn holding an exclusive lock file (pid inside; a dead holder's lock is taken over). */
async function withLock<T>(lockFile: string, fn: () => Promise<T>): Promise<T> {
  await fs.mkdir(path.dirname(lockFile), { recursive: true });
  for (let waited = false; ; ) {
    try {
      const fh = await fs.open(lockFile, "wx");
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number.parseInt((await readText(lockFile)) ?? "", 10);
    if (Number.isInteger(owner) && owner > 0 && !isAlive(owner)) {
      await fs.rm(lockFile, { force: true });
      continue;
    }
    if (!waited) {
      waited = true;
      stderrLog(`tools: waiting for another process installing (${path.basename(lockFile)})…`);
    }
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lockFile, { force: true });
  }
}

const seconds = (startedMs: number): string =>
  `${((performance.now() - startedMs) / 1000).toFixed(1)}s`;

// ---------------------------------------------------------------------------------------------
// Go tools

/** Absolute path of a Go tool's binary (whether or not it is installed yet). */
export function goToolPath(name: GoToolName): string {
  return path.join(GO_BIN_DIR, name);
}

function goStamp(name: GoToolName): string {
  const { pkg, version } = GO_TOOLS[name];
  return `${pkg}@${version} -X main.version=${version} ${process.platform}-${process.arch}\n`;
}

const goStampFile = (name: GoToolName): string => path.join(GO_DIR, `${name}.stamp`);

async function goToolIsCurrent(name: GoToolName): Promise<boolean> {
  return (
    (await readText(goStampFile(name))) === goStamp(name) && (await isExecutable(goToolPath(name)))
  );
}

/** Installs one pinned Go tool into .cache/go/bin unless that version is already there. */
export async function ensureGoTool(name: GoToolName, log: Log = stderrLog): Promise<string> {
  const bin = goToolPath(name);
  if (await goToolIsCurrent(name)) return bin;
  return withLock(path.join(GO_DIR, `${name}.lock`), async () => {
    if (await goToolIsCurrent(name)) return bin; // installed by another process meanwhile
    const { pkg, version } = GO_TOOLS[name];
    log(`tools: go install ${pkg}@${version} (the first install takes a minute or so)…`);
    const started = performance.now();
    // Install into a private GOBIN, then rename: a reader never sees a half-written binary.
    const tmpBin = path.join(GO_DIR, `.install-${name}-${process.pid}`);
    await fs.rm(tmpBin, { recursive: true, force: true });
    await fs.mkdir(tmpBin, { recursive: true });
    await fs.mkdir(GO_BIN_DIR, { recursive: true });
    try {
      const goflags = [process.env.GOFLAGS, "-mod=mod"].filter(Boolean).join(" ");
      await run(
        "go",
        ["install", "-trimpath", `-ldflags=-s -w -X main.version=${version}`, `${pkg}@${version}`],
        {
          // Outside the repo: no go.mod here must influence a `go install pkg@version`.
          cwd: GO_DIR,
          env: { ...process.env, GOBIN: tmpBin, GOFLAGS: goflags },
          what: `installing ${name}`,
        },
      );
      await fs.rename(path.join(tmpBin, name), bin);
    } finally {
      await fs.rm(tmpBin, { recursive: true, force: true });
    }
    await writeAtomic(goStampFile(name), goStamp(name));
    log(`tools: ${name} ${version} installed in ${seconds(started)}`);
    return bin;
  });
}

/** Installs every pinned Go tool (one after the other: each `go install` uses all cores). */
export async function ensureGoTools(log: Log = stderrLog): Promise<Record<GoToolName, string>> {
  const out = {} as Record<GoToolName, string>;
  for (const name of Object.keys(GO_TOOLS) as GoToolName[])
    out[name] = await ensureGoTool(name, log);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Go client (tools/goclient)

const GOCLIENT_DIR = path.join(REPO_ROOT, "tools", "goclient");
/** The generated stubs: output of buf.gen.go.yaml, git-ignored, excluded from the hash. */
const GOCLIENT_GEN_DIR = path.join(GOCLIENT_DIR, "gen");
const GOCLIENT_TEMPLATE = "buf.gen.go.yaml";
/** The Go client (`calls ADDRESS`, `watch`): test/go-client.test.ts and `npm run bench:watch`. */
export const GOCLIENT_BIN = path.join(GO_BIN_DIR, "tokenvend-goclient");
const GOCLIENT_STAMP = path.join(GO_DIR, "tokenvend-goclient.stamp");
// -mod=readonly: the committed go.sum must be complete; a build never rewrites it.
const GOCLIENT_BUILD_ARGS = ["build", "-trimpath", "-mod=readonly", "-buildvcs=false"];
const GOCLIENT_PLUGINS = ["protoc-gen-go", "protoc-gen-go-grpc"] as const;

async function filesUnder(dir: string, skip?: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (file === skip) continue;
    if (entry.isDirectory()) out.push(...(await filesUnder(file, skip)));
    else out.push(file);
  }
  return out.sort();
}

/** A hash of everything the Go client is made from: sources, proto/, template, pins, buf. */
async function goClientHash(): Promise<string> {
  const h = createHash("sha256");
  const buf = JSON.parse(
    await fs.readFile(path.join(REPO_ROOT, "node_modules/@bufbuild/buf/package.json"), "utf8"),
  ) as { version: string };
  h.update(
    `${process.platform}-${process.arch} ${GOCLIENT_BUILD_ARGS.join(" ")} buf ${buf.version}\n`,
  );
  for (const name of GOCLIENT_PLUGINS) h.update(goStamp(name));
  const files = [
    path.join(REPO_ROOT, "buf.yaml"),
    path.join(REPO_ROOT, GOCLIENT_TEMPLATE),
    ...(await filesUnder(path.join(REPO_ROOT, "proto"))),
    ...(await filesUnder(GOCLIENT_DIR, GOCLIENT_GEN_DIR)),
  ];
  for (const file of files) {
    h.update(`${path.relative(REPO_ROOT, file)}\n`);
    h.update(await fs.readFile(file));
    h.update("\n");
  }
  return `${h.digest("hex")}\n`;
}

async function goClientIsCurrent(hash: string): Promise<boolean> {
  return (await readText(GOCLIENT_STAMP)) === hash && (await isExecutable(GOCLIENT_BIN));
}

/**
 * Generates the Go stubs from proto/ (buf, local plugins only) and builds tools/goclient into
 * .cache/go/bin/tokenvend-goclient, unless a build of exactly these inputs is there.
 */
export async function ensureGoClient(log: Log = stderrLog): Promise<string> {
  const hash = await goClientHash();
  if (await goClientIsCurrent(hash)) return GOCLIENT_BIN;
  for (const name of GOCLIENT_PLUGINS) await ensureGoTool(name, log);
  return withLock(path.join(GO_DIR, "tokenvend-goclient.lock"), async () => {
    if (await goClientIsCurrent(hash)) return GOCLIENT_BIN;
    log("tools: generating the Go stubs and building tools/goclient…");
    const started = performance.now();
    // buf finds the plugins on PATH: the pinned ones first.
    const nodeBin = path.join(REPO_ROOT, "node_modules", ".bin");
    const env = {
      ...process.env,
      PATH: [GO_BIN_DIR, nodeBin, process.env.PATH ?? ""].join(path.delimiter),
    };
    await run(path.join(nodeBin, "buf"), ["generate", "--template", GOCLIENT_TEMPLATE], {
      env,
      what: "generating the Go stubs",
    });
    const tmp = `${GOCLIENT_BIN}.${process.pid}.tmp`;
    try {
      await run("go", [...GOCLIENT_BUILD_ARGS, "-o", tmp, "."], {
        cwd: GOCLIENT_DIR,
        env,
        what: "building tools/goclient",
      });
      await fs.rename(tmp, GOCLIENT_BIN); // atomic: a running client keeps its old inode
    } finally {
      await fs.rm(tmp, { force: true });
    }
    await writeAtomic(GOCLIENT_STAMP, hash);
    log(`tools: tokenvend-goclient built in ${seconds(started)}`);
    return GOCLIENT_BIN;
  });
}

// ---------------------------------------------------------------------------------------------
// Python venv

const PY_STAMP = path.join(PY_VENV_DIR, "tokenvend.stamp");
const pyStampText = (): string => `${PYTHON_REQUIREMENTS.join("\n")}\n`;

async function venvIsCurrent(): Promise<boolean> {
  return (await readText(PY_STAMP)) === pyStampText() && (await isExecutable(PY_VENV_PYTHON));
}

/** The Python that creates the venv: $TOKENVEND_PYTHON_BASE, else `python3` on PATH. */
function basePython(): string {
  return process.env.TOKENVEND_PYTHON_BASE || "python3";
}

/**
 * Creates .cache/py with the pinned packages unless it is there with exactly these pins, and
 * returns its interpreter. pip uses its own download cache, so a rebuild is quick.
 */
export async function ensurePythonVenv(log: Log = stderrLog): Promise<string> {
  if (await venvIsCurrent()) return PY_VENV_PYTHON;
  await fs.mkdir(CACHE_DIR, { recursive: true });
  return withLock(path.join(CACHE_DIR, "py.lock"), async () => {
    if (await venvIsCurrent()) return PY_VENV_PYTHON;
    log(`tools: creating the Python venv .cache/py (${PYTHON_REQUIREMENTS.join(", ")})…`);
    const started = performance.now();
    await fs.rm(PY_VENV_DIR, { recursive: true, force: true });
    await run(basePython(), ["-m", "venv", PY_VENV_DIR], { what: "creating the Python venv" });
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PIP_DISABLE_PIP_VERSION_CHECK: "1",
      PIP_NO_INPUT: "1",
    };
    delete env.PYTHONHOME;
    delete env.VIRTUAL_ENV;
    await run(PY_VENV_PYTHON, ["-m", "pip", "install", "--quiet", ...PYTHON_REQUIREMENTS], {
      env,
      what: "installing the Python packages",
    });
    await run(PY_VENV_PYTHON, ["-c", PYTHON_IMPORT_CHECK], {
      env,
      what: "checking the Python venv",
    });
    await writeAtomic(PY_STAMP, pyStampText()); // last: an interrupted install is redone
    log(`tools: Python venv ready in ${seconds(started)}`);
    return PY_VENV_PYTHON;
  });
}

// ---------------------------------------------------------------------------------------------
// Everything

export interface Tools {
  goBinDir: string;
  goTools: Record<GoToolName, string>;
  goClient: string;
  python: string;
}

/** Installs (or finds cached) all tools; the Go installs and the venv proceed side by side. */
export async function ensureAllTools(log: Log = stderrLog): Promise<Tools> {
  const [{ goTools, goClient }, python] = await Promise.all([
    // The Go client after the Go tools: both go builds use every core.
    ensureGoTools(log).then(async (goTools) => ({ goTools, goClient: await ensureGoClient(log) })),
    ensurePythonVenv(log),
  ]);
  return { goBinDir: GO_BIN_DIR, goTools, goClient, python };
}

/**
 * The environment variables the test processes get: TOKENVEND_TOOLS_BIN (read by
 * test/support/tools.ts), TOKENVEND_PYTHON, and PATH with .cache/go/bin first.
 */
export function toolEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const rest = (env.PATH ?? "").split(path.delimiter).filter((p) => p && p !== GO_BIN_DIR);
  return {
    TOKENVEND_TOOLS_BIN: GO_BIN_DIR,
    TOKENVEND_PYTHON: PY_VENV_PYTHON,
    PATH: [GO_BIN_DIR, ...rest].join(path.delimiter),
  };
}

// ---------------------------------------------------------------------------------------------
// CLI

if (import.meta.main) {
  const started = performance.now();
  try {
    const tools = await ensureAllTools();
    stderrLog(
      `tools: ready in ${seconds(started)}: ${Object.values(tools.goTools).join(", ")}, ${tools.goClient}, ${tools.python}`,
    );
    if (process.argv.includes("--env")) {
      for (const [k, v] of Object.entries(toolEnv())) process.stdout.write(`export ${k}='${v}'\n`);
    }
  } catch (err) {
    stderrLog(`tools: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
