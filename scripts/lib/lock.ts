// One process at a time: an exclusive lock file holding the holder's pid. A live holder is
// waited for; a dead one's lock (a build killed half-way) is taken over.

import * as fs from "node:fs/promises";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive } from "./run.ts";

export async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  for (let said = false; ; await sleep(250)) {
    try {
      await fs.writeFile(file, String(process.pid), { flag: "wx" });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    // 0 while the holder has created the file but not written its pid yet: wait.
    const holder = Number(await fs.readFile(file, "utf8").catch(() => ""));
    if (holder > 0 && !isAlive(holder)) await fs.rm(file, { force: true });
    else if (!said) {
      said = true;
      process.stderr.write(`waiting for another process holding ${path.basename(file)}…\n`);
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(file, { force: true });
  }
}
