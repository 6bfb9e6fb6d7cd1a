// FerretDB v1, a real MongoDB-protocol server for tests, benchmarks and local development: the
// small Go program in tools/ferretdb (its main.go says why it exists), built once into
// .cache/go/bin/ferretdb (scripts/tools.ts) and started on a free loopback port. Its backend is
// PostgreSQL by default (a private server the wrapper starts and stops, ./postgres.ts), because
// the SQLite backend uses no index for queries; SQLite is for tests about FerretDB itself.
//
// API:  ensureFerretdbBinary(),
//       startFerretdb({ backend?, dataDir?, port?, durable?, logLevel?, readyTimeoutMs? })
// CLI:  node scripts/ferretdb.ts start [--port N] [--data-dir DIR]   (npm run db:start)
//       node scripts/ferretdb.ts stop | status | build                (npm run db:stop)

import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive } from "./lib/run.ts";
import { CACHE_DIR } from "./lib/stamp.ts";
import { ensureDataDir, ensurePostgres, wrapperFlags } from "./postgres.ts";
import { ensureGoProgram, GO_BIN_DIR } from "./tools.ts";

export const FERRETDB_BIN = path.join(GO_BIN_DIR, "ferretdb");
const STATE_FILE = path.join(CACHE_DIR, "ferretdb.json");
const DEV_DATA_DIR = path.join(CACHE_DIR, "ferretdb-pgdata");
const DEV_LOG = path.join(CACHE_DIR, "ferretdb.log");
const STOP_TIMEOUT_MS = 10_000;

/** Builds tools/ferretdb unless a build of its current sources is there; returns its path. */
export function ensureFerretdbBinary(): Promise<string> {
  return ensureGoProgram("ferretdb", FERRETDB_BIN);
}

/** The FerretDB binary and PostgreSQL (installed and its template made), as the tests need them. */
export async function ensureFerretdb(): Promise<void> {
  await Promise.all([ensureFerretdbBinary(), ensurePostgres()]);
}

export interface StartFerretdbOptions {
  /** "postgresql" (default): a private PostgreSQL; "sqlite": for tests about FerretDB itself. */
  backend?: "postgresql" | "sqlite";
  /**
   * The backend's data directory (PostgreSQL's, initialized when empty; or SQLite's); kept on
   * stop. Default: a new temporary directory, removed on stop.
   */
  dataDir?: string;
  /** PostgreSQL with its crash-safety settings (fsync…); default false, for test speed. */
  durable?: boolean;
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

/** Servers not stopped yet: killed when this process exits, a last resort for a forgotten stop. */
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** Starts FerretDB on a free loopback port and resolves once it accepts connections. */
export async function startFerretdb(opts: StartFerretdbOptions = {}): Promise<FerretdbServer> {
  const bin = await ensureFerretdbBinary();
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-ferretdb-")));
  const args = await serverArgs({
    port: opts.port ?? 0,
    dataDir,
    logLevel: opts.logLevel ?? "error",
    backend: opts.backend ?? "postgresql",
    durable: opts.durable ?? false,
  });
  // -exit-on-stdin-eof: a parent killed by SIGKILL runs no exit hook, but its pipe closes.
  const child = spawn(bin, [...args, "-exit-on-stdin-eof"], { stdio: "pipe" });
  live.add(child);

  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      live.delete(child);
      resolve();
    });
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS); // also keeps the loop alive
        await exited;
        clearTimeout(timer);
      }
      if (ownDir) await fs.rm(dataDir, { recursive: true, force: true });
    })();
    return stopping;
  };

  let uri: string;
  try {
    uri = await waitForReady(child, opts.readyTimeoutMs ?? 30_000, () => stderr);
  } catch (err) {
    await stop();
    throw err;
  }
  // An idle server must not keep the caller's event loop alive; the exit hook cleans up.
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr])
    (s as unknown as { unref?: () => void }).unref?.();
  return { uri, pid: child.pid as number, stop };
}

async function serverArgs(o: {
  port: number;
  dataDir: string;
  logLevel: string;
  backend: "postgresql" | "sqlite";
  durable: boolean;
}): Promise<string[]> {
  const common = ["-listen", `127.0.0.1:${o.port}`, "-log-level", o.logLevel];
  if (o.backend === "sqlite") return [...common, "-sqlite-dir", o.dataDir];
  const pg = await ensurePostgres();
  await ensureDataDir(pg, o.dataDir);
  return [...common, ...wrapperFlags(pg, o.dataDir, o.durable)];
}

/** Resolves with the URI of the server's `READY mongodb://…` line on stdout. */
function waitForReady(child: ChildProcess, timeoutMs: number, stderr: () => string) {
  return new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const settle = (uri: string | undefined, why = "") => {
      clearTimeout(timer);
      lines.close();
      child.off("exit", onExit).off("error", onError);
      if (uri !== undefined) resolve(uri);
      else reject(new Error(`ferretdb: ${why}; stderr:\n${stderr().trimEnd() || "(none)"}`));
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      settle(undefined, `exited before it was ready (${signal ?? `exit code ${code}`})`);
    const onError = (err: Error) => settle(undefined, `could not start: ${err.message}`);
    const timer = setTimeout(() => settle(undefined, `not ready after ${timeoutMs} ms`), timeoutMs);
    lines.on("line", (line) => {
      const uri = /^READY (mongodb:\/\/\S+)$/.exec(line.trim())?.[1];
      if (uri !== undefined) settle(uri);
    });
    child.once("exit", onExit).once("error", onError);
  });
}

// ---------------------------------------------------------------------------------------------
// CLI: a detached server for local development, its state in .cache/ferretdb.json

interface DevState {
  pid: number;
  uri: string;
  dataDir: string;
}

async function runningServer(): Promise<DevState | undefined> {
  const state = await fs
    .readFile(STATE_FILE, "utf8")
    .then((text) => JSON.parse(text) as DevState)
    .catch(() => undefined);
  return state && isOurServer(state.pid) ? state : undefined;
}

/** Alive and (where /proc says) our ferretdb binary, not a recycled pid. */
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
  for (let i = 0; i < args.length; i += 2) {
    const [flag, value] = [args[i], args[i + 1]];
    if (flag === "--port" && value !== undefined) port = Number(value);
    else if (flag === "--data-dir" && value !== undefined) dataDir = path.resolve(value);
    else throw new Error(`unknown argument ${flag}; usage: start [--port N] [--data-dir DIR]`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error("--port must be 0..65535");
  return { port, dataDir };
}

async function cliStart(flags: string[]): Promise<void> {
  const { port, dataDir } = parseFlags(flags);
  const running = await runningServer();
  if (running) {
    process.stderr.write(
      `ferretdb: already running (pid ${running.pid}, data in ${running.dataDir})\n`,
    );
    process.stdout.write(`MONGODB_URI=${running.uri}\n`);
    return;
  }
  const bin = await ensureFerretdbBinary();
  const args = await serverArgs({
    port,
    dataDir,
    logLevel: "info",
    backend: "postgresql",
    durable: true,
  });
  const log = openSync(DEV_LOG, "a");
  // stdout only carries the READY line: once it is read, nothing more is written to the pipe.
  const child = spawn(bin, args, {
    detached: true,
    stdio: ["ignore", "pipe", log],
  });
  closeSync(log);
  const uri = await waitForReady(child, 30_000, () =>
    readFileSync(DEV_LOG, "utf8").slice(-4000),
  ).catch((err: unknown) => {
    child.kill("SIGKILL");
    throw err;
  });
  child.stdout?.destroy();
  child.unref();
  const state: DevState = { pid: child.pid as number, uri, dataDir };
  await fs.writeFile(STATE_FILE, `${JSON.stringify(state, null, 2)}\n`);
  process.stderr.write(
    `ferretdb: started (pid ${state.pid}, data in ${dataDir}, log ${DEV_LOG})\n`,
  );
  process.stdout.write(`MONGODB_URI=${uri}\n`);
}

async function cliStop(): Promise<void> {
  const running = await runningServer();
  if (running) {
    process.kill(running.pid, "SIGTERM");
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (isAlive(running.pid) && Date.now() < deadline) await sleep(50);
    if (isAlive(running.pid)) process.kill(running.pid, "SIGKILL");
    process.stderr.write(
      `ferretdb: stopped (pid ${running.pid}; data kept in ${running.dataDir})\n`,
    );
  } else process.stderr.write("ferretdb: not running\n");
  await fs.rm(STATE_FILE, { force: true });
}

async function cliStatus(): Promise<void> {
  const running = await runningServer();
  if (!running) {
    process.stderr.write("ferretdb: not running\n");
    process.exitCode = 1;
    return;
  }
  process.stderr.write(`ferretdb: running (pid ${running.pid}, data in ${running.dataDir})\n`);
  process.stdout.write(`MONGODB_URI=${running.uri}\n`);
}

if (import.meta.main) {
  const [command, ...rest] = process.argv.slice(2);
  const commands: Record<string, () => Promise<unknown>> = {
    start: () => cliStart(rest),
    stop: cliStop,
    status: cliStatus,
    build: async () => {
      await ensureFerretdb();
      process.stdout.write(`${FERRETDB_BIN}\n`);
    },
  };
  const cli = commands[command ?? ""];
  if (cli)
    await cli().catch((err: Error) => {
      process.stderr.write(`${err.message}\n`);
      process.exitCode = 1;
    });
  else {
    process.stderr.write(
      "usage: node scripts/ferretdb.ts start [--port N] [--data-dir DIR] | stop | status | build\n",
    );
    process.exitCode = 2;
  }
}
