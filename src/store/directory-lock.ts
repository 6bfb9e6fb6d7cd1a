// The file store's directory lock: one process per directory (docs/STORAGE.md, "File store").
//
// `<dir>/tokenvend.lock` holds `<pid> <random token>`. It is written in full under a temp name and
// then hard-linked into place, which, like an O_EXCL create, fails when the lock exists, but never
// leaves a lock file without its pid. A lock whose pid is dead, or names this process's pid
// without one of this process's tokens (a restarted container), or cannot be read, is stale and
// taken over under a second lock, `tokenvend.lock.takeover`, so one taker wins. A live holder is
// refused with StoreError LOCKED naming its pid and the directory.

import { randomUUID } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { io } from "./file-io.ts";
import { isAlive } from "./process-alive.ts";
import { StoreError } from "./store-error.ts";

export const LOCK_FILE = "tokenvend.lock";

/**
 * Tokens of the locks this process holds or is taking: a lock file naming our own pid is live only
 * when its token is listed (otherwise an earlier process had our pid, as after a container restart).
 */
const ourTokens = new Set<string>();

export interface Lock {
  release(): Promise<void>;
}

interface LockContent {
  pid: number;
  token: string;
}

function parseLock(text: string): LockContent | undefined {
  const [pid, token] = text.trim().split(/\s+/);
  const n = Number(pid);
  return Number.isSafeInteger(n) && n > 0 && token !== undefined ? { pid: n, token } : undefined;
}

/** Whether a lock's holder may still be running. */
function holderRunning(content: LockContent | undefined): boolean {
  if (content === undefined) return false; // unreadable: no process can be named as its holder
  if (content.pid === process.pid) return ourTokens.has(content.token);
  return isAlive(content.pid);
}

/**
 * Takes `<dir>/tokenvend.lock`, held until release(). Of two processes finding the same dead
 * holder only one removes its lock (the takeover guard); the other then finds the first one's
 * lock, alive.
 */
export async function acquireLock(dir: string): Promise<Lock> {
  const lockPath = path.join(dir, LOCK_FILE);
  const guardPath = `${lockPath}.takeover`;
  const token = randomUUID();
  const mine = `${process.pid} ${token}\n`;
  const tmp = `${lockPath}.${process.pid}.${token}.tmp`;
  ourTokens.add(token);
  await io(`create ${tmp}`, () => fs.writeFile(tmp, mine, { mode: 0o600, flag: "wx" }));
  const refuse = (content: LockContent) =>
    new StoreError(
      "LOCKED",
      `file store directory ${dir} is in use by process ${content.pid}` +
        `${content.pid === process.pid ? " (this process)" : ""}; stop that process first ` +
        `(if ${content.pid} is not a tokenvend process, remove ${lockPath})`,
    );
  const read = async (p: string) => parseLock(await fs.readFile(p, "utf8").catch(() => ""));
  let held = false;
  try {
    for (let attempt = 0; attempt < 200; attempt++) {
      if (await linked(tmp, lockPath)) {
        held = true;
        return {
          async release() {
            // Remove it only while it is still ours.
            if ((await read(lockPath))?.token === token) await fs.rm(lockPath, { force: true });
            ourTokens.delete(token);
          },
        };
      }
      const holder = await read(lockPath);
      if (holderRunning(holder) && holder !== undefined) throw refuse(holder);
      // Stale: take it over under the takeover guard.
      if (!(await linked(tmp, guardPath))) {
        const guard = await read(guardPath);
        if (guard !== undefined && !holderRunning(guard))
          await fs.rm(guardPath, { force: true }); // its taker died midway
        else await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      try {
        const again = await read(lockPath);
        if (again?.token === holder?.token && !holderRunning(again))
          await fs.rm(lockPath, { force: true });
      } finally {
        await fs.rm(guardPath, { force: true });
      }
    }
    throw new StoreError("LOCKED", `file store directory ${dir}: could not take ${lockPath}`);
  } finally {
    if (!held) ourTokens.delete(token);
    await fs.rm(tmp, { force: true });
  }
}

async function linked(from: string, to: string): Promise<boolean> {
  try {
    await fs.link(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw new StoreError("IO", `file store: cannot create ${to}`, { cause: err });
  }
}
