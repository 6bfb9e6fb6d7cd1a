// The fuzz corpus in the repository (fuzz/corpus/): inputs worth keeping, mutated by every run.
//   rpc/<Method>/<hash>.bin | .json   request bodies that reached an outcome no earlier input had
//   <target>/<hash>.txt               parser inputs (config, duration, keys, sealed-value, …)
//   failures/<name>-<hash>.txt        what broke a rule, with the rule (never committed passing)
// File names are content hashes, so a run adds each input once.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export const corpusDir = path.join(import.meta.dirname, "corpus");

export interface RpcCorpus {
  readonly binary: readonly Uint8Array[];
  readonly json: readonly string[];
}

const files = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);

/** Every method's kept bodies. */
export function readRpcCorpus(root = corpusDir): Map<string, RpcCorpus> {
  const out = new Map<string, RpcCorpus>();
  const rpc = path.join(root, "rpc");
  for (const method of files(rpc)) {
    const dir = path.join(rpc, method);
    const names = files(dir);
    out.set(method, {
      binary: names.filter((n) => n.endsWith(".bin")).map((n) => readFileSync(path.join(dir, n))),
      json: names
        .filter((n) => n.endsWith(".json"))
        .map((n) => readFileSync(path.join(dir, n), "utf8")),
    });
  }
  return out;
}

/** Every parser target's kept inputs. */
export function readParserCorpus(names: readonly string[], root = corpusDir) {
  return new Map(
    names.map((name) => {
      const dir = path.join(root, name);
      return [name, files(dir).map((n) => readFileSync(path.join(dir, n), "utf8"))] as const;
    }),
  );
}

/** What the repository keeps: small inputs, a bounded number per target. */
const maxEntryBytes = 4096;
const maxEntries = 64;

/**
 * Keeps `content` under `sub` (no-op when it is there already, too large, or the directory is
 * full; failures are always kept); true when it was new.
 */
export function keep(sub: string, content: Uint8Array | string, ext: string, root = corpusDir) {
  const dir = path.join(root, sub);
  const name = `${createHash("sha256").update(content).digest("hex").slice(0, 16)}.${ext}`;
  const file = path.join(dir, name);
  if (existsSync(file)) return false;
  if (sub !== "failures" && (content.length > maxEntryBytes || files(dir).length >= maxEntries)) {
    return false;
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, content);
  return true;
}
