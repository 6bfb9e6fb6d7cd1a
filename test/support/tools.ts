// Paths of the external tools tests drive. `npm test` installs them first (scripts/tools.ts) and
// passes their location as TOKENVEND_TOOLS_BIN and TOKENVEND_PYTHON; a test run by other means
// (`npx ava …`) finds them at the same cached place, .cache/, once `npm test` or
// `node scripts/tools.ts` has run.

import { accessSync, constants } from "node:fs";
import * as path from "node:path";
import {
  ensureGoClient,
  ensureJavaClient,
  ensureK8sCheck,
  GO_BIN_DIR,
  type GoToolName,
  PY_VENV_PYTHON,
} from "../../scripts/tools.ts";

const HOW_TO_INSTALL =
  "run `npm test` or `node scripts/tools.ts` to install it (cached in .cache/)";

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Absolute path of `grpcurl`, `ghz` or `promtool`; throws, saying how to install it, when it is missing. */
export function toolPath(name: GoToolName): string {
  const file = path.join(process.env.TOKENVEND_TOOLS_BIN || GO_BIN_DIR, name);
  if (!executable(file)) throw new Error(`${name} is not installed at ${file}: ${HOW_TO_INSTALL}`);
  return file;
}

/** Absolute path of the venv's Python (grpcio, grpcio-tools, protobuf); throws when missing. */
export function pythonPath(): string {
  const file = process.env.TOKENVEND_PYTHON || PY_VENV_PYTHON;
  if (!executable(file)) {
    throw new Error(`the test Python venv is missing (${file}): ${HOW_TO_INSTALL}`);
  }
  return file;
}

/**
 * Absolute path of the Go client (tools/goclient on stubs generated from proto/), built first
 * when it is missing or its inputs changed (cached: a hash check, no process, when current).
 * Go is part of the machine: without it this fails, saying so, instead of skipping.
 */
export const goClientPath = () => built("the Go client", ensureGoClient);

/** Builds `what` with `build` when needed (cached), or fails saying what could not be built. */
async function built(what: string, build: () => Promise<string>): Promise<string> {
  try {
    return await build();
  } catch (err) {
    throw new Error(
      `${what} could not be built: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

/** The Java client's jar (tools/javaclient, grpc-java stubs from proto/), built when needed. */
export const javaClientPath = () => built("the Java client", ensureJavaClient);

/** The manifest checker (tools/k8scheck), built when needed. */
export const k8sCheckPath = () => built("tools/k8scheck", ensureK8sCheck);
