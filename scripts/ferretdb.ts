// FerretDB v1 (SQLite backend) as a real MongoDB-protocol server for tests and local development.
//
// The server is the small Go program in tools/ferretdb (see its main.go for why it exists). This
// module builds it once into .cache/bin/ferretdb (rebuilt only when main.go, go.mod or go.sum
// change), and starts and stops it on a free loopback port.
//
// API:    ensureFerretdbBinary(), startFerretdb({ dataDir?, port?, logLevel?, readyTimeoutMs? })
// CLI:    node scripts/ferretdb.ts start [--port N] [--data-dir DIR]   (npm run db:start)
//         node scripts/ferretdb.ts stop                                (npm run db:stop)
//         node scripts/ferretdb.ts status | build

import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive } from "../src/process-alive.ts";

const REPO_ROOT = path.resolve(import.meta.dirname, "..");
const TOOL_DIR = path.join(REPO_ROOT, "tools", "ferretdb");
const TOOL_SOURCES = ["main.go", "go.mod", "go.sum"];
const CACHE_DIR = path.join(REPO_ROOT, ".cache");
const BIN_DIR = path.join(CACHE_DIR, "bin");
export const FERRETDB_BIN = path.join(BIN_DIR, "ferretdb");
const STAMP = `${FERRETDB_BIN}.stamp`;
const BUILD_LOCK = `${FERRETDB_BIN}.lock`;
const STATE_FILE = path.join(CACHE_DIR, "ferretdb.json");
const DEV_DATA_DIR = path.join(CACHE_DIR, "ferretdb-data");
const DEV_STDOUT = path.join(CACHE_DIR, "ferretdb.out");
const DEV_LOG = path.join(CACHE_DIR, "ferretdb.log");

// Without the PostgreSQL backend: the tests and dev server only use SQLite, and the build is smaller.
const GO_BUILD_ARGS = ["build", "-trimpath", "-tags", "ferretdb_no_postgresql"];
const BUILD_TIMEOUT_MS = 15 * 60_000;
const STOP_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Building

async function sourceHash(): Promise<string> {
  const h = createHash("sha256");
  h.update(`${process.platform}-${process.arch} ${GO_BUILD_ARGS.join(" ")}\n`);
  for (const name of TOOL_SOURCES) {
    h.update(`${name}\n`);
    h.update(await fs.readFile(path.join(TOOL_DIR, name)));
    h.update("\n");
  }
  return h.digest("hex");
}

async function isUpToDate(hash: string): Promise<boolean> {
  try {
    const [stamp] = await Promise.all([
      fs.readFile(STAMP, "utf8"),
      fs.access(FERRETDB_BIN, fs.constants.X_OK),
    ]);
    return stamp.trim() === hash;
  } catch {
    return false;
  }
}

/** Takes the build lock (several test workers may call ensureFerretdbBinary at once). */
async function acquireBuildLock(): Promise<() => Promise<void>> {
  for (;;) {
    try {
      const fh = await fs.open(BUILD_LOCK, "wx");
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => fs.rm(BUILD_LOCK, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number.parseInt(await fs.readFile(BUILD_LOCK, "utf8").catch(() => ""), 10);
    if (Number.isInteger(owner) && owner > 0 && !isAlive(owner)) {
      await fs.rm(BUILD_LOCK, { force: true }); // stale: its builder died
      continue;
    }
    await sleep(250); // another process is building (or has just created the lock)
  }
}

function goBuild(output: string): Promise<void> {
  const flags = [process.env.GOFLAGS, "-mod=mod", "-buildvcs=false"].filter(Boolean).join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn("go", [...GO_BUILD_ARGS, "-o", output, "."], {
      cwd: TOOL_DIR,
      env: { ...process.env, GOFLAGS: flags },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: BUILD_TIMEOUT_MS,
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    child.on("error", (err: NodeJS.ErrnoException) => {
      reject(
        err.code === "ENOENT"
          ? new Error(
              "ferretdb: the Go toolchain (go >= 1.24) is not on PATH; install Go, or set MONGODB_URI",
            )
          : err,
      );
    });
    child.on("close", (code, signal) => {
      if (code === 0) resolve();
      else
        reject(
          new Error(
            `ferretdb: go build failed (${signal ?? `exit ${code}`}) in ${TOOL_DIR}:\n${tail(out)}`,
          ),
        );
    });
  });
}

/**
 * Returns the path of the FerretDB wrapper binary, building it first when it is missing or its
 * sources (tools/ferretdb/main.go, go.mod, go.sum) changed since the last build. Safe to call
 * from several processes at once: one builds, the others wait.
 */
export async function ensureFerretdbBinary(): Promise<string> {
  const hash = await sourceHash();
  if (await isUpToDate(hash)) return FERRETDB_BIN;

  await fs.mkdir(BIN_DIR, { recursive: true });
  const release = await acquireBuildLock();
  try {
    if (await isUpToDate(hash)) return FERRETDB_BIN; // built by another process meanwhile
    process.stderr.write(
      "ferretdb: building tools/ferretdb (the first build takes a minute or two)…\n",
    );
    const started = performance.now();
    const tmp = `${FERRETDB_BIN}.${process.pid}.tmp`;
    try {
      await goBuild(tmp);
      await fs.rename(tmp, FERRETDB_BIN); // atomic: a running server keeps its old inode
    } finally {
      await fs.rm(tmp, { force: true });
    }
    await fs.writeFile(STAMP, `${hash}\n`);
    process.stderr.write(
      `ferretdb: built in ${((performance.now() - started) / 1000).toFixed(1)}s\n`,
    );
    return FERRETDB_BIN;
  } finally {
    await release();
  }
}

// ---------------------------------------------------------------------------------------------
// Running

export interface StartFerretdbOptions {
  /** SQLite data directory; kept on stop. Default: a new temporary directory, removed on stop. */
  dataDir?: string;
  /** Loopback port; default 0 (the kernel picks a free one). Pass the old port to restart in place. */
  port?: number;
  /** FerretDB log level on stderr: "debug" | "info" | "warn" | "error" (default). */
  logLevel?: string;
  /** How long to wait for the server to accept connections (default 30 s). */
  readyTimeoutMs?: number;
}

export interface FerretdbServer {
  /** `mongodb://127.0.0.1:PORT/` */
  uri: string;
  pid: number;
  /** Stops the server (SIGTERM, then SIGKILL after 10 s) and removes its temp data dir. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort for servers a caller forgot to stop. A parent killed by SIGKILL runs no hook:
  // the server then sees its stdin close (-exit-on-stdin-eof) and shuts itself down.
  process.on("exit", () => {
    for (const child of live) child.kill("SIGKILL");
  });
}

function tail(text: string, max = 4000): string {
  const t = text.trimEnd();
  return t.length > max ? `…${t.slice(-max)}` : t;
}

/** Starts FerretDB on a free loopback port and resolves once it accepts connections. */
export async function startFerretdb(opts: StartFerretdbOptions = {}): Promise<FerretdbServer> {
  const bin = await ensureFerretdbBinary();
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-ferretdb-")));
  const timeoutMs = opts.readyTimeoutMs ?? 30_000;

  const child = spawn(
    bin,
    [
      "-listen",
      `127.0.0.1:${opts.port ?? 0}`,
      "-sqlite-dir",
      dataDir,
      "-log-level",
      opts.logLevel ?? "error",
      "-exit-on-stdin-eof",
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  live.add(child);
  installExitHook();

  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr = (stderr + d).slice(-16_000);
  });
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      live.delete(child);
      resolve();
    });
  });

  const removeDir = async () => {
    if (ownDir) await fs.rm(dataDir, { recursive: true, force: true });
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS); // also keeps the loop alive
        await exited;
        clearTimeout(timer);
      }
      await removeDir();
    })();
    return stopping;
  };

  let uri: string;
  try {
    uri = await waitForReady(child, timeoutMs, () => stderr);
  } catch (err) {
    await stop();
    throw err;
  }

  // Do not let an idle server keep the caller's event loop alive; the exit hook cleans up.
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr])
    (s as unknown as { unref?: () => void })?.unref?.();

  return { uri, pid: child.pid as number, stop };
}

function waitForReady(
  child: ChildProcess,
  timeoutMs: number,
  stderr: () => string,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const fail = (why: string) => {
      cleanup();
      const errTail = tail(stderr());
      reject(
        new Error(`ferretdb: ${why}${errTail ? `; stderr:\n${errTail}` : " (no stderr output)"}`),
      );
    };
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const onLine = (line: string) => {
      const m = /^READY (mongodb:\/\/\S+)$/.exec(line.trim());
      if (m) {
        cleanup();
        resolve(m[1] as string);
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      fail(`exited before it was ready (${signal ?? `exit code ${code}`})`);
    const onError = (err: Error) => fail(`could not start ${FERRETDB_BIN}: ${err.message}`);
    const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      lines.off("line", onLine);
      lines.close();
      child.off("exit", onExit);
      child.off("error", onError);
    }
    lines.on("line", onLine);
    child.once("exit", onExit);
    child.once("error", onError);
  });
}

// ---------------------------------------------------------------------------------------------
// CLI: a detached server for local development (npm run db:start / db:stop)

interface DevState {
  pid: number;
  uri: string;
  dataDir: string;
  startedAt: string;
}

async function readState(): Promise<DevState | undefined> {
  try {
    return JSON.parse(await fs.readFile(STATE_FILE, "utf8")) as DevState;
  } catch {
    return undefined;
  }
}

/** True when pid is alive and (where /proc says so) is our ferretdb binary, not a recycled pid. */
function isOurServer(pid: number): boolean {
  if (!isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] === FERRETDB_BIN;
  } catch {
    return true;
  }
}

function parseFlags(args: string[]): { port: number; dataDir: string } {
  let port = 0;
  let dataDir = DEV_DATA_DIR;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const value = args[i + 1];
    if (arg === "--port" && value !== undefined) {
      port = Number.parseInt(value, 10);
      i++;
    } else if (arg === "--data-dir" && value !== undefined) {
      dataDir = path.resolve(value);
      i++;
    } else {
      throw new Error(`unknown argument ${arg}; usage: start [--port N] [--data-dir DIR]`);
    }
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error("--port must be 0..65535");
  return { port, dataDir };
}

async function cliStart(args: string[]): Promise<void> {
  const { port, dataDir } = parseFlags(args);
  const state = await readState();
  if (state && isOurServer(state.pid)) {
    process.stderr.write(
      `ferretdb: already running (pid ${state.pid}, data in ${state.dataDir})\n`,
    );
    process.stdout.write(`MONGODB_URI=${state.uri}\n`);
    return;
  }
  const bin = await ensureFerretdbBinary();
  await fs.mkdir(dataDir, { recursive: true });
  await fs.rm(DEV_STDOUT, { force: true });
  const out = openSync(DEV_STDOUT, "w");
  const err = openSync(DEV_LOG, "a");
  const child = spawn(
    bin,
    ["-listen", `127.0.0.1:${port}`, "-sqlite-dir", dataDir, "-log-level", "info"],
    {
      detached: true,
      stdio: ["ignore", out, err],
    },
  );
  closeSync(out);
  closeSync(err);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`ferretdb: could not start ${bin}`);
  let exitCode: string | undefined;
  child.once("exit", (code, signal) => {
    exitCode = signal ?? `exit code ${code}`;
  });
  child.unref();

  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = /^READY (mongodb:\/\/\S+)$/m.exec(
      await fs.readFile(DEV_STDOUT, "utf8").catch(() => ""),
    );
    if (m) {
      const devState: DevState = {
        pid,
        uri: m[1] as string,
        dataDir,
        startedAt: new Date().toISOString(),
      };
      await fs.writeFile(STATE_FILE, `${JSON.stringify(devState, null, 2)}\n`);
      process.stderr.write(`ferretdb: started (pid ${pid}, data in ${dataDir}, log ${DEV_LOG})\n`);
      process.stdout.write(`MONGODB_URI=${devState.uri}\n`);
      return;
    }
    if (exitCode !== undefined || Date.now() > deadline) {
      if (exitCode === undefined) process.kill(pid, "SIGKILL");
      const log = await fs.readFile(DEV_LOG, "utf8").catch(() => "");
      throw new Error(
        `ferretdb: ${exitCode ? `exited (${exitCode})` : "not ready after 30 s"}; ${DEV_LOG}:\n${tail(log)}`,
      );
    }
    await sleep(50);
  }
}

async function cliStop(): Promise<void> {
  const state = await readState();
  if (!state) {
    process.stderr.write("ferretdb: not running (no .cache/ferretdb.json)\n");
    return;
  }
  if (isOurServer(state.pid)) {
    process.kill(state.pid, "SIGTERM");
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (isAlive(state.pid) && Date.now() < deadline) await sleep(50);
    if (isAlive(state.pid)) process.kill(state.pid, "SIGKILL");
    process.stderr.write(`ferretdb: stopped (pid ${state.pid}; data kept in ${state.dataDir})\n`);
  } else {
    process.stderr.write(`ferretdb: pid ${state.pid} was no longer running\n`);
  }
  await fs.rm(STATE_FILE, { force: true });
}

async function cliStatus(): Promise<void> {
  const state = await readState();
  if (state && isOurServer(state.pid)) {
    process.stderr.write(`ferretdb: running (pid ${state.pid}, data in ${state.dataDir})\n`);
    process.stdout.write(`MONGODB_URI=${state.uri}\n`);
  } else {
    process.stderr.write("ferretdb: not running\n");
    process.exitCode = 1;
  }
}

if (import.meta.main) {
  const [command, ...rest] = process.argv.slice(2);
  const commands: Record<string, () => Promise<unknown>> = {
    start: () => cliStart(rest),
    stop: cliStop,
    status: cliStatus,
    build: async () => process.stdout.write(`${await ensureFerretdbBinary()}\n`),
  };
  const run = command === undefined ? undefined : commands[command];
  if (!run) {
    process.stderr.write(
      "usage: node scripts/ferretdb.ts start [--port N] [--data-dir DIR] | stop | status | build\n",
    );
    process.exitCode = 2;
  } else {
    run().catch((err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    });
  }
}
