// PostgreSQL for FerretDB's PostgreSQL backend: Debian's `postgresql` package (installed with
// apt-get when missing), a data directory initialized once per PostgreSQL version and user into
// .cache/postgresql/ (initdb takes seconds; a copy takes a fraction of one) and copied for each
// server. The server itself is started and stopped by the FerretDB wrapper (tools/ferretdb,
// postgres.go), so it never outlives it.
//
// PostgreSQL refuses to run as root: as root the directory belongs to, and the server runs as,
// the `postgres` user the package creates (`nobody` when there is none).

import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { withLock } from "./lib/lock.ts";
import { run } from "./lib/run.ts";
import { buildOnce, CACHE_DIR } from "./lib/stamp.ts";

/** The database user initdb makes; trusted on loopback (the server listens on 127.0.0.1 only). */
export const PG_USER = "tokenvend";
const PG_CACHE = path.join(CACHE_DIR, "postgresql");

export interface Postgres {
  /** Directory of initdb and postgres. */
  bin: string;
  /** Major version, e.g. "15". */
  version: string;
  /** Who owns data directories and runs the server. */
  uid: number;
  gid: number;
}

/** Debian's versioned bin directories, newest first. */
function installedBins(): { bin: string; version: string }[] {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((v) => /^\d+$/.test(v) && existsSync(path.join(root, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a))
    .map((version) => ({ bin: path.join(root, version, "bin"), version }));
}

/** `postgres`'s uid and gid, else `nobody`'s, from /etc/passwd; ours when not root. */
function serverUser(): { uid: number; gid: number } {
  if (process.getuid?.() !== 0)
    return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const users = new Map(
    readFileSync("/etc/passwd", "utf8")
      .split("\n")
      .map((l) => l.split(":"))
      .filter((f) => f.length >= 4)
      .map((f) => [f[0], { uid: Number(f[2]), gid: Number(f[3]) }] as const),
  );
  const user = users.get("postgres") ?? users.get("nobody");
  if (user === undefined)
    throw new Error("postgresql: no `postgres` or `nobody` user to run it as");
  return user;
}

/** PostgreSQL's binaries, installed with apt-get when missing. */
export async function ensurePostgres(): Promise<Postgres> {
  let found = installedBins()[0];
  if (found === undefined) {
    await withLock(path.join(CACHE_DIR, "postgresql-install.lock"), async () => {
      if (installedBins().length > 0) return;
      if (process.getuid?.() !== 0) {
        throw new Error(
          "postgresql: not installed; run `apt-get install -y postgresql` as root (Debian's package)",
        );
      }
      process.stderr.write("postgresql: installing Debian's postgresql package…\n");
      const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
      const install = () =>
        run("apt-get", ["install", "-y", "--no-install-recommends", "postgresql"], { env });
      await install().catch(async () => {
        await run("apt-get", ["update"], { env });
        await install();
      });
    });
    found = installedBins()[0];
    if (found === undefined) throw new Error("postgresql: installed, but no initdb found");
  }
  return { ...found, ...serverUser() };
}

/** An initialized data directory, made once per version and user (initdb), to copy from. */
async function template(pg: Postgres): Promise<string> {
  const dir = path.join(PG_CACHE, `template-${pg.version}-${pg.uid}`);
  await buildOnce({
    name: `postgresql-template-${pg.version}-${pg.uid}`,
    inputs: ["scripts/postgres.ts"],
    salt: `${pg.version} ${pg.uid}:${pg.gid}`,
    outputs: [dir],
    build: async () => {
      await fs.rm(dir, { recursive: true, force: true });
      // The server's user must reach the template through its parent.
      await fs.mkdir(PG_CACHE, { recursive: true });
      await fs.chmod(PG_CACHE, 0o755);
      await fs.mkdir(dir, { mode: 0o700 });
      await fs.chown(dir, pg.uid, pg.gid);
      await runAs(pg, path.join(pg.bin, "initdb"), [
        "-D",
        dir,
        "-U",
        PG_USER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
      ]);
    },
  });
  return dir;
}

/**
 * Makes `dir` a data directory of its own (copied from the template) unless it is one already,
 * owned by the server's user, mode 0700 (PostgreSQL requires it).
 */
export async function ensureDataDir(pg: Postgres, dir: string): Promise<void> {
  if (existsSync(path.join(dir, "PG_VERSION"))) return;
  const from = await template(pg);
  await fs.mkdir(path.dirname(dir), { recursive: true });
  await fs.rm(dir, { recursive: true, force: true });
  // -a keeps the owner and modes; as root that is the server's user.
  await run("cp", ["-a", from, dir]);
  await fs.chmod(dir, 0o700);
}

/** The wrapper's flags for a private server on `dir` (tools/ferretdb, -postgresql-*). */
export function wrapperFlags(pg: Postgres, dir: string, durable: boolean): string[] {
  // Tests do not need crash safety; the benchmarks and db:start keep PostgreSQL's defaults.
  const settings = durable ? [] : ["fsync=off", "synchronous_commit=off", "full_page_writes=off"];
  return [
    "-postgresql-data",
    dir,
    "-postgresql-bin",
    pg.bin,
    "-postgresql-user",
    PG_USER,
    "-postgresql-uid",
    String(pg.uid),
    "-postgresql-gid",
    String(pg.gid),
    ...(settings.length > 0 ? ["-postgresql-settings", settings.join(",")] : []),
  ];
}

function runAs(pg: Postgres, cmd: string, args: string[]): Promise<string> {
  if (process.getuid?.() !== 0) return run(cmd, args);
  // setpriv (util-linux) drops to the user; initdb refuses root.
  return run("setpriv", [
    `--reuid=${pg.uid}`,
    `--regid=${pg.gid}`,
    "--clear-groups",
    "--",
    cmd,
    ...args,
  ]);
}
