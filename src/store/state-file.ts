// The file store's state file, `<dir>/tokens.json` (mode 0600): its format, the atomic writer
// and the loader.
//
// A write never changes the file in place: write `tokens.json.<pid>.<n>.tmp`, fsync it, rename it
// over `tokens.json`, fsync the directory. A crash at any point leaves the old state or the new
// one, and at worst a temp file, which removeTempFiles() clears at the next start. Loading checks
// every document and opens every sealed value: a malformed file is CORRUPT (never replaced by an
// empty store) and a keyring that cannot open it is a SealingError, at start rather than on some
// later read.

import * as fs from "node:fs/promises";
import * as path from "node:path";
import { io } from "./file-io.ts";
import { type Keyring, SealingError } from "./sealing.ts";
import { StoreError } from "./store-error.ts";
import { documentKey, fromDocument, type TokenDocument } from "./token-document.ts";

export const STATE_FILE = "tokens.json";
const FORMAT = "tokenvend-file-store";
const VERSION = 1;

interface StateFile {
  format: typeof FORMAT;
  version: typeof VERSION;
  tokens: TokenDocument[];
}

/** The state file's text for these documents. */
export function stateText(tokens: TokenDocument[]): string {
  const state: StateFile = { format: FORMAT, version: VERSION, tokens };
  return `${JSON.stringify(state)}\n`;
}

let tempSeq = 0;

/** Replaces `target` (in `dir`) with `text`, atomically and durably; StoreError IO on failure. */
export async function writeAtomically(dir: string, target: string, text: string): Promise<void> {
  const tmp = `${target}.${process.pid}.${tempSeq++}.tmp`;
  await io(`write ${target}`, async () => {
    try {
      const fh = await fs.open(tmp, "wx", 0o600);
      try {
        await fh.writeFile(text, "utf8");
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, target);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    // Make the rename itself durable.
    const dh = await fs.open(dir, "r");
    try {
      await dh.sync();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EINVAL" && code !== "EISDIR" && code !== "EPERM") throw err; // not supported here
    } finally {
      await dh.close();
    }
  });
}

/** Temp files left by a writer that died between creating and renaming them. */
export async function removeTempFiles(dir: string): Promise<void> {
  const names = await io(`list ${dir}`, () => fs.readdir(dir));
  for (const name of names) {
    if (name.startsWith(`${STATE_FILE}.`) && name.endsWith(".tmp")) {
      await fs.rm(path.join(dir, name), { force: true });
    }
  }
}

/** The documents of the state file; none when it does not exist yet. */
export async function loadState(statePath: string, keyring: Keyring): Promise<TokenDocument[]> {
  let text: string;
  try {
    text = await fs.readFile(statePath, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new StoreError("IO", `file store: cannot read ${statePath}`, { cause: err });
  }
  const bad = (why: string, cause?: unknown) =>
    new StoreError("CORRUPT", `file store: ${statePath} ${why}`, { cause });
  let state: unknown;
  try {
    state = JSON.parse(text);
  } catch (err) {
    throw bad("is not valid JSON", err);
  }
  const s = state as Partial<StateFile> | null;
  if (typeof s !== "object" || s === null || s.format !== FORMAT)
    throw bad(`is not a ${FORMAT} file`);
  if (s.version !== VERSION)
    throw bad(`has version ${String(s.version)}; this version reads ${VERSION}`);
  if (!Array.isArray(s.tokens)) throw bad(`has no "tokens" list`);
  const seen = new Set<string>();
  for (const [i, doc] of s.tokens.entries()) {
    try {
      documentKey(doc as unknown as Record<string, unknown>);
      if (!Number.isSafeInteger(doc.generation)) throw new StoreError("CORRUPT", "bad generation");
      const id = `${doc.key}#${doc.generation}`;
      if (seen.has(id)) throw new StoreError("CORRUPT", "duplicate generation");
      seen.add(id);
      // Fail at start, not on some later read, when the keyring cannot open what is stored.
      fromDocument(doc as unknown as Record<string, unknown>, keyring);
    } catch (err) {
      if (err instanceof SealingError) {
        throw new SealingError(
          err.code,
          `file store ${statePath}, token ${i + 1}: ${err.message}`,
          {
            cause: err,
          },
        );
      }
      throw bad(`token ${i + 1} is malformed`, err);
    }
  }
  return s.tokens;
}
