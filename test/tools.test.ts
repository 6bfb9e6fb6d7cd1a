// The external tools the tests drive are installed, runnable, and the pinned versions.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import test from "ava";
import { GO_TOOLS, PYTHON_REQUIREMENTS } from "../scripts/tools.ts";
import { pythonPath, toolPath } from "./support/tools.ts";

const exec = promisify(execFile);

const pinned = (pkg: string): string => {
  const req = PYTHON_REQUIREMENTS.find((r) => r.startsWith(`${pkg}==`));
  if (!req) throw new Error(`${pkg} is not pinned`);
  return req.slice(pkg.length + 2);
};

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
