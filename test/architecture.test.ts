// The layering docs/ARCHITECTURE.md draws, checked on every import: a folder
// imports only what its row allows, so a shortcut across layers fails here
// rather than in review. And no file under src/ holds more than one idea's
// worth of lines (400).

import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import test from "ava";

const repo = new URL("..", import.meta.url).pathname;

function filesUnder(dir: string): string[] {
  return readdirSync(join(repo, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? filesUnder(join(dir, e.name))
      : e.name.endsWith(".ts")
        ? [join(dir, e.name)]
        : [],
  );
}

/** Every module a file imports, statically or dynamically: repo paths for relative ones, package names otherwise. */
function importsOf(file: string): { local: string[]; packages: string[] } {
  const text = readFileSync(join(repo, file), "utf8");
  const specs = [...text.matchAll(/(?:\bfrom|\bimport\(|^import)\s*"([^"]+)"/gm)].map((m) => m[1]!);
  const local = specs
    .filter((s) => s.startsWith("."))
    .map((s) => normalize(join(dirname(file), s)));
  const packages = specs
    .filter((s) => !s.startsWith("."))
    .map((s) => (s.startsWith("@") ? s.split("/").slice(0, 2).join("/") : s.split("/")[0]!));
  return { local, packages };
}

/** For each folder: the paths (prefixes) its files may import, and the packages when they are limited. */
const rules: Record<string, { local: string[]; packages?: string[] }> = {
  "src/core/": {
    local: ["src/core/", "src/telemetry/instrument.ts", "src/telemetry/metrics.ts"],
    // lru-cache: a data structure, with no I/O and no clock of its own (no TTL used).
    packages: ["@opentelemetry/api", "lru-cache"],
  },
  "src/transport/": { local: ["src/transport/", "gen/google/rpc/"] },
  "src/telemetry/": { local: ["src/telemetry/"] },
  "src/store/": { local: ["src/store/", "src/core/"] },
  "src/idp/": { local: ["src/idp/", "src/core/"] },
  "src/rpc/": {
    local: [
      "src/rpc/",
      "src/core/",
      "src/transport/",
      "src/telemetry/",
      "src/auth/",
      "src/audit/",
      "gen/",
    ],
  },
  "src/auth/": { local: ["src/auth/"], packages: ["jose", "lru-cache", "rate-limiter-flexible"] },
  "src/audit/": { local: ["src/audit/"], packages: [] },
  "src/dev/": { local: ["src/dev/", "src/core/", "src/config.ts"] },
  "src/ops/": { local: ["src/ops/", "src/core/", "src/store/"] },
  "scripts/": { local: ["scripts/", "tools/"] },
};

test("every folder imports only what its layer may", (t) => {
  const broken: string[] = [];
  for (const [folder, rule] of Object.entries(rules)) {
    const files = filesUnder(folder).filter((f) => !f.endsWith(".test.ts"));
    t.true(files.length > 0, `${folder} has files`);
    for (const file of files) {
      const { local, packages } = importsOf(file);
      for (const target of local) {
        if (!rule.local.some((allowed) => target.startsWith(allowed))) {
          broken.push(`${file} imports ${relative(repo, join(repo, target))}`);
        }
      }
      for (const pkg of packages) {
        if (
          rule.packages !== undefined &&
          !pkg.startsWith("node:") &&
          !rule.packages.includes(pkg)
        ) {
          broken.push(`${file} imports the package ${pkg}`);
        }
      }
    }
  }
  t.deepEqual(broken, []);
});

test("the telemetry the core imports uses @opentelemetry/api only", (t) => {
  for (const file of ["src/telemetry/instrument.ts", "src/telemetry/metrics.ts"]) {
    const { local, packages } = importsOf(file);
    t.deepEqual(local, [], file);
    t.deepEqual([...new Set(packages)], ["@opentelemetry/api"], file);
  }
});

test("no file under src/ is over 400 lines", (t) => {
  const long = filesUnder("src")
    .map((f) => ({ f, lines: readFileSync(join(repo, f), "utf8").split("\n").length - 1 }))
    .filter(({ lines }) => lines > 400)
    .map(({ f, lines }) => `${f}: ${lines}`);
  t.deepEqual(long, []);
});
