// The external tools the tests drive are installed, runnable, and the pinned versions.

import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import test from "ava";
import { GO_TOOLS } from "../scripts/tools.ts";
import { pythonPath, toolPath } from "./support/tools.ts";

const exec = promisify(execFile);

const requirements = readFileSync(
  new URL("../tools/python/requirements.txt", import.meta.url),
  "utf8",
);
const pinned = (pkg: string): string => {
  const version = new RegExp(`^${pkg}==(\\S+)$`, "m").exec(requirements)?.[1];
  if (!version) throw new Error(`${pkg} is not pinned in tools/python/requirements.txt`);
  return version;
};

test("GO_TOOLS reads tools/devtools/go.mod as Go does: each tool with its module's version", async (t) => {
  const { stdout } = await exec(
    "go",
    ["list", "-mod=readonly", "-f", "{{.ImportPath}} {{.Module.Version}}", "tool"],
    { cwd: new URL("../tools/devtools", import.meta.url) },
  );
  t.deepEqual(
    Object.values(GO_TOOLS)
      .map((tool) => `${tool.pkg} ${tool.version}`)
      .sort(),
    stdout.trim().split("\n").sort(),
  );
});

test("grpcurl -version prints the pinned version", async (t) => {
  // grpcurl prints its version on stderr.
  const { stdout, stderr } = await exec(toolPath("grpcurl"), ["-version"]);
  t.is(`${stdout}${stderr}`.trim(), `grpcurl ${GO_TOOLS.grpcurl.version}`);
});

test("ghz --version prints the pinned version", async (t) => {
  const { stdout, stderr } = await exec(toolPath("ghz"), ["--version"]);
  t.is(`${stdout}${stderr}`.trim(), GO_TOOLS.ghz.version);
});

test("the Python venv imports grpc, grpc_tools and protobuf at the pinned versions", async (t) => {
  const script = [
    "import grpc, grpc_tools.protoc, google.protobuf",
    "from importlib.metadata import version",
    "print(grpc.__version__, version('grpcio-tools'), google.protobuf.__version__)",
  ].join("\n");
  const { stdout } = await exec(pythonPath(), ["-c", script]);
  t.deepEqual(stdout.trim().split(" "), [
    pinned("grpcio"),
    pinned("grpcio-tools"),
    pinned("protobuf"),
  ]);
});
