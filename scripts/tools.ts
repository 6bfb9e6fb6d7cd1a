// The external tools the tests drive, each built once per state of its inputs (lib/stamp.ts):
//
//   .cache/go/bin/grpcurl, ghz,          `go install tool` of tools/devtools/go.mod, with each
//     promtool, protoc-gen-go,           tool's module version stamped in (`grpcurl -version`)
//     protoc-gen-go-grpc
//   .cache/go/bin/tokenvend-goclient     tools/goclient on the Go stubs buf generates from proto/
//                                        into tools/goclient/gen (git-ignored)
//   .cache/go/bin/ferretdb               tools/ferretdb (scripts/ferretdb.ts)
//   .cache/go/bin/tokenvend-k8scheck     tools/k8scheck: k8s/ decoded strictly into k8s.io/api types
//   tools/javaclient/target/*.jar        tools/javaclient (Maven) on grpc-java stubs from proto/;
//                                        its Maven repository is .cache/m2 (offline once filled)
//   .cache/py                            a venv with tools/python/requirements.txt
//
// Go's module and build caches are Go's own (GOMODCACHE, GOCACHE), shared by every checkout.
//
// CLI: node scripts/tools.ts [--env]   installs everything; --env prints the tests' environment

import { readFileSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { REPO_ROOT, run } from "./lib/run.ts";
import { buildOnce, CACHE_DIR } from "./lib/stamp.ts";

/** Where every Go binary goes (GOBIN). Tests get it as TOKENVEND_TOOLS_BIN and first on PATH. */
export const GO_BIN_DIR = path.join(CACHE_DIR, "go", "bin");
const PY_VENV_DIR = path.join(CACHE_DIR, "py");
/** The venv's interpreter. Tests get it as TOKENVEND_PYTHON. */
export const PY_VENV_PYTHON = path.join(PY_VENV_DIR, "bin", "python");
/** The Go client (`calls ADDRESS`, `watch`): test/go-client.test.ts and `npm run bench:watch`. */
const GOCLIENT_BIN = path.join(GO_BIN_DIR, "tokenvend-goclient");

const BUF = path.join(REPO_ROOT, "node_modules", ".bin", "buf");

const TOOL_NAMES = ["grpcurl", "ghz", "promtool", "protoc-gen-go", "protoc-gen-go-grpc"] as const;
export type GoToolName = (typeof TOOL_NAMES)[number];
interface GoTool {
  pkg: string;
  version: string;
}

/** The tools of tools/devtools/go.mod, each with the version of the module it is in. */
export const GO_TOOLS = readGoTools(
  readFileSync(path.join(REPO_ROOT, "tools/devtools/go.mod"), "utf8"),
);

function readGoTools(goMod: string): Record<GoToolName, GoTool> {
  // `tool (…)` / `require (…)` blocks, or one-line `tool x` / `require x v1`.
  const lines = (directive: string) =>
    [...goMod.matchAll(new RegExp(`^${directive} (?:\\(\\n([^)]*)\\)|(.+))`, "gm"))]
      .flatMap((m) => (m[1] ?? m[2] ?? "").split("\n"))
      .map((l) => l.replace(/\/\/.*/, "").trim())
      .filter(Boolean);
  const modules = lines("require").map((l) => l.split(/\s+/) as [string, string]);
  const tools = lines("tool");
  const entries = TOOL_NAMES.map((name) => {
    const pkg = tools.find((t) => t.endsWith(`/${name}`));
    // The longest module path the package is in: protoc-gen-go-grpc is its own module.
    const [, version] =
      modules
        .filter(([mod]) => pkg === mod || pkg?.startsWith(`${mod}/`))
        .sort(([a], [b]) => b.length - a.length)[0] ?? [];
    if (pkg === undefined || version === undefined)
      throw new Error(`tools/devtools/go.mod: no tool ${name} with a required version`);
    return [name, { pkg, version }];
  });
  return Object.fromEntries(entries) as Record<GoToolName, GoTool>;
}

/** The same flags for every Go build; -mod=readonly: a committed go.sum is complete. */
function go(command: "build" | "install", dir: string, args: string[]): Promise<string> {
  return run("go", [command, "-trimpath", "-mod=readonly", "-buildvcs=false", ...args], {
    cwd: path.join(REPO_ROOT, dir),
    env: { ...process.env, GOBIN: GO_BIN_DIR },
  });
}

export async function ensureGoTools(): Promise<void> {
  await buildOnce({
    name: "devtools",
    inputs: ["tools/devtools/go.{mod,sum}"],
    outputs: TOOL_NAMES.map((name) => path.join(GO_BIN_DIR, name)),
    // `go install` stamps no version: -X main.version, as the projects' release builds do
    // (the protoc plugins carry theirs in the code; -X is a no-op there).
    build: () =>
      go("install", "tools/devtools", [
        ...Object.values(GO_TOOLS).map(
          (t) => `-ldflags=${t.pkg}=-s -w -X main.version=${t.version}`,
        ),
        "tool",
      ]),
  });
}

/** Builds the Go program in tools/<name> into .cache/go/bin/<bin> when its inputs change. */
export async function ensureGoProgram(
  name: string,
  bin: string,
  opts: { flags?: string[]; inputs?: string[]; before?: () => Promise<unknown> } = {},
): Promise<string> {
  const flags = opts.flags ?? [];
  await buildOnce({
    name,
    inputs: [`tools/${name}/*.go`, `tools/${name}/go.{mod,sum}`, ...(opts.inputs ?? [])],
    salt: flags.join(" "),
    outputs: [bin],
    build: async () => {
      await opts.before?.();
      await go("build", `tools/${name}`, [...flags, "-o", bin, "."]);
    },
  });
  return bin;
}

/** Generates the Go stubs from proto/ and builds tools/goclient, unless they are current. */
export async function ensureGoClient(): Promise<string> {
  await ensureGoTools(); // buf runs the pinned protoc plugins
  const PATH = [GO_BIN_DIR, process.env.PATH].join(path.delimiter);
  return ensureGoProgram("goclient", GOCLIENT_BIN, {
    inputs: [
      "proto/**/*.proto",
      "buf.yaml",
      "buf.gen.go.yaml",
      "tools/devtools/go.mod",
      "node_modules/@bufbuild/buf/package.json",
    ],
    before: () =>
      run(BUF, ["generate", "--template", "buf.gen.go.yaml"], { env: { ...process.env, PATH } }),
  });
}

/** The manifest checker (`tokenvend-k8scheck DIR…`): test/k8s-types.test.ts. */
export function ensureK8sCheck(): Promise<string> {
  return ensureGoProgram("k8scheck", path.join(GO_BIN_DIR, "tokenvend-k8scheck"));
}

/** The Java client's self-contained jar (`java -jar JAR calls ADDRESS`): test/java-client.test.ts. */
export const JAVA_CLIENT_JAR = path.join(
  REPO_ROOT,
  "tools/javaclient/target/tokenvend-javaclient.jar",
);

/**
 * Builds tools/javaclient with Maven when its inputs change: offline from .cache/m2 when that
 * holds everything (every build after the first), else online (Maven Central) to fill it.
 */
export async function ensureJavaClient(): Promise<string> {
  const m2 = path.join(CACHE_DIR, "m2");
  const mvn = (offline: boolean) =>
    run("mvn", ["-B", "-q", `-Dmaven.repo.local=${m2}`, ...(offline ? ["-o"] : []), "package"], {
      cwd: path.join(REPO_ROOT, "tools/javaclient"),
    });
  await buildOnce({
    name: "javaclient",
    inputs: ["tools/javaclient/pom.xml", "tools/javaclient/src/**/*.java", "proto/**/*.proto"],
    outputs: [JAVA_CLIENT_JAR],
    build: async () => {
      await mvn(true).catch(() => mvn(false));
      // buildOnce keeps executables: the jar runs as `java -jar`, and on binfmt hosts directly.
      await fs.chmod(JAVA_CLIENT_JAR, 0o755);
    },
  });
  return JAVA_CLIENT_JAR;
}

/** Creates .cache/py from tools/python/requirements.txt, unless it is current. */
export async function ensurePythonVenv(): Promise<string> {
  const requirements = "tools/python/requirements.txt";
  await buildOnce({
    name: "py",
    inputs: [requirements],
    outputs: [PY_VENV_PYTHON],
    build: async () => {
      await fs.rm(PY_VENV_DIR, { recursive: true, force: true });
      await run("python3", ["-m", "venv", PY_VENV_DIR]);
      const pip = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"];
      await run(PY_VENV_PYTHON, [...pip, "-r", requirements]);
    },
  });
  return PY_VENV_PYTHON;
}

/** Everything but FerretDB (scripts/ferretdb.ts); the venv and the Java client beside the Go builds. */
export async function ensureAllTools(): Promise<void> {
  await Promise.all([
    ensureGoClient().then(ensureK8sCheck),
    ensurePythonVenv(),
    ensureJavaClient(),
  ]);
}

/** TOKENVEND_TOOLS_BIN (test/support/tools.ts), TOKENVEND_PYTHON, PATH with the Go tools first. */
export function toolEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const rest = (env.PATH ?? "").split(path.delimiter).filter((p) => p && p !== GO_BIN_DIR);
  return {
    TOKENVEND_TOOLS_BIN: GO_BIN_DIR,
    TOKENVEND_PYTHON: PY_VENV_PYTHON,
    PATH: [GO_BIN_DIR, ...rest].join(path.delimiter),
  };
}

if (import.meta.main) {
  await ensureAllTools();
  if (process.argv.includes("--env"))
    for (const [k, v] of Object.entries(toolEnv())) process.stdout.write(`export ${k}='${v}'\n`);
}
