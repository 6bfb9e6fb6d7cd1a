// The file store's directory lock (src/store/directory-lock.ts), taken by opening stores on real
// temp directories: a live holder is refused by name, in this process or another; a stale lock
// (dead holder, an earlier process with our pid, garbage) is taken over.

import * as fs from "node:fs/promises";
import * as path from "node:path";
import test, { type ExecutionContext } from "ava";
import { grantKey } from "../src/core/token.ts";
import { LOCK_FILE } from "../src/store/directory-lock.ts";
import { createFileStore } from "../src/store/file-store.ts";
import { StoreError } from "../src/store/store-error.ts";
import { child, openInChild, ourLock, ring, tempDirs, waitForLine } from "./support/file-store.ts";
import { live } from "./support/store-contract.ts";

const tempDir = tempDirs(test);

test("a second store on the same directory is refused, naming the pid and the directory", async (t) => {
  const dir = await tempDir();
  const first = await createFileStore({ dir, keyring: ring });
  const err = await t.throwsAsync(createFileStore({ dir, keyring: ring }), {
    instanceOf: StoreError,
  });
  t.is(err?.code, "LOCKED");
  t.is(
    err?.message,
    `file store directory ${dir} is in use by process ${process.pid} (this process); stop that ` +
      `process first (if ${process.pid} is not a tokenvend process, remove ${path.join(dir, LOCK_FILE)})`,
  );
  await first.insert(live(grantKey("g"), 1)); // the refused one took nothing away
  await first.close();
  const second = await createFileStore({ dir, keyring: ring });
  t.is((await second.getActive(grantKey("g")))?.generation, 1);
  await second.close();
});

test("a store held by another live process is refused with that process's pid", async (t) => {
  const dir = await tempDir();
  const holder = child(`${openInChild(dir)} console.log("open"); setInterval(() => {}, 1000);`);
  try {
    await waitForLine(holder, (line) => line === "open");
    const err = await t.throwsAsync(createFileStore({ dir, keyring: ring }), {
      instanceOf: StoreError,
    });
    t.is(err?.code, "LOCKED");
    t.true(
      err?.message.startsWith(
        `file store directory ${dir} is in use by process ${holder.proc.pid};`,
      ),
    );
  } finally {
    holder.proc.kill("SIGKILL");
    await holder.exited;
  }
  // Its holder is dead now: the lock is stale and taken over.
  t.regex(await fs.readFile(path.join(dir, LOCK_FILE), "utf8"), new RegExp(`^${holder.proc.pid} `));
  const store = await createFileStore({ dir, keyring: ring });
  t.regex(await fs.readFile(path.join(dir, LOCK_FILE), "utf8"), ourLock);
  await store.close();
});

/** Opens a store over a lock file holding `content`; the store must take the lock over. */
async function takesOver(t: ExecutionContext, content: string): Promise<void> {
  const dir = await tempDir();
  const lockPath = path.join(dir, LOCK_FILE);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(lockPath, content);
  const store = await createFileStore({ dir, keyring: ring });
  t.regex(await fs.readFile(lockPath, "utf8"), ourLock);
  await store.close();
  await t.throwsAsync(fs.access(lockPath)); // and released on close
}

test("a lock naming this process's pid but not one of its locks (a restarted container) is taken over", (t) =>
  takesOver(t, `${process.pid} some-earlier-incarnation\n`));

test("a lock with garbage in it is taken over", (t) => takesOver(t, ""));
