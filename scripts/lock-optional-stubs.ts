// The npm registry reachable here lacks other platforms' prebuilt binaries
// (@biomejs/cli-*, @bufbuild/buf-*), so `npm install` leaves them out of the
// lockfile and `npm ci` then refuses it. This adds an entry for each missing
// optional dependency, tagged with its os/cpu, which `npm ci` skips on Linux.
// Idempotent; run after every install (postinstall).

import { readFileSync, writeFileSync } from "node:fs";

interface LockPackage {
  version?: string;
  dev?: boolean;
  optional?: boolean;
  optionalDependencies?: Record<string, string>;
  os?: string[];
  cpu?: string[];
  libc?: string[];
}

const path = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(path, "utf8")) as { packages: Record<string, LockPackage> };
const oses = ["android", "darwin", "linux", "win32", "freebsd"];
const cpus: Record<string, string> = { arm64: "arm64", x64: "x64", armv7: "arm", ia32: "ia32" };
let added = 0;

for (const [at, pkg] of Object.entries(lock.packages)) {
  for (const [name, range] of Object.entries(pkg.optionalDependencies ?? {})) {
    const where = `${at === "" ? "" : `${at}/`}node_modules/${name}`;
    const hoisted = `node_modules/${name}`;
    if (lock.packages[where] !== undefined || lock.packages[hoisted] !== undefined) continue;
    const parts = name.split("/").at(-1)?.split("-") ?? [];
    const os = parts.find((p) => oses.includes(p));
    const cpu = parts.map((p) => cpus[p]).find((c) => c !== undefined);
    if (os === undefined || cpu === undefined) continue;
    lock.packages[hoisted] = {
      version: range.replace(/^[\^~=]/, ""),
      ...(pkg.dev ? { dev: true } : {}),
      optional: true,
      os: [os],
      cpu: [cpu],
      ...(parts.includes("musl") ? { libc: ["musl"] } : {}),
    };
    added++;
  }
}

if (added > 0) {
  const sorted = Object.fromEntries(
    Object.entries(lock.packages).sort(([a], [b]) =>
      a === "" ? -1 : b === "" ? 1 : a.localeCompare(b),
    ),
  );
  lock.packages = sorted;
  writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`);
  process.stdout.write(`package-lock.json: added ${added} optional platform entries\n`);
}
