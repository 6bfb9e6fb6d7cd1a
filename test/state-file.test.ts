// The file store's state file (src/store/state-file.ts), through stores on real temp
// directories: a writer killed with SIGKILL mid-write leaves the last completed state, a failed
// write changes nothing, and a state file that is corrupt or sealed under other keys is refused
// at open, never replaced.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import test from "ava";
import { grantKey } from "../src/core/token.ts";
import { LOCK_FILE } from "../src/store/directory-lock.ts";
import { createFileStore } from "../src/store/file-store.ts";
import { createKeyring, SealingError } from "../src/store/sealing.ts";
import { STATE_FILE } from "../src/store/state-file.ts";
import { StoreError } from "../src/store/store-error.ts";
import { child, openInChild, ring, tempDirs, waitForLine } from "./support/file-store.ts";
import { live } from "./support/store-contract.ts";

const tempDir = tempDirs(test);

test("a writer killed with SIGKILL mid-write leaves the last completed state readable", async (t) => {
  const dir = await tempDir();
  // A child writes generation after generation of one key over a bulky state (300 other keys),
  // printing each generation once insert() has resolved; it is killed at a random moment. Rounds
  // repeat (each child takes over the dead one's lock) until a kill has landed mid-write, seen
  // as the interrupted write's temp file left behind; about every other kill does.
  const writer = `${openInChild(dir)}
    const live = (key, generation) => ({ key, generation, reason: "refreshed", tokens: {
      accessToken: "at-" + generation, refreshToken: "rt-" + generation, idToken: undefined,
      tokenType: "Bearer", scopes: ["openid"], issuedAt: 1, expiresAt: 2, subject: undefined,
      clientId: undefined } });
    if (!(await store.getActive({ kind: "grant", grant: "filler-299" })))
      for (let i = 0; i < 300; i++) await store.insert(live({ kind: "grant", grant: "filler-" + i }, 1));
    const key = { kind: "grant", grant: "hot" };
    let g = (await store.getActive(key))?.generation ?? 0;
    console.log("ready " + g);
    for (;;) {
      await store.insert(live(key, ++g));
      console.log(g);
    }
  `;
  let interrupted = 0;
  let rounds = 0;
  while (rounds < 20 && (interrupted === 0 || rounds < 3)) {
    rounds++;
    const w = child(writer);
    let lastDone = -1;
    w.lines.on("line", (line) => {
      lastDone = Number(line.replace(/^ready /, ""));
    });
    try {
      await waitForLine(w, (line) => line.startsWith("ready"));
    } catch (err) {
      w.proc.kill("SIGKILL");
      throw err;
    }
    t.true(lastDone >= 0, w.stderr());
    await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 100));
    w.proc.kill("SIGKILL");
    await w.exited;
    if ((await fs.readdir(dir)).some((name) => name.endsWith(".tmp"))) interrupted++;

    const store = await createFileStore({ dir, keyring: ring });
    const active = await store.getActive(grantKey("hot"));
    // Every generation whose insert resolved is there; beyond it at most the one in flight.
    const gen = active?.generation ?? 0;
    t.true(gen >= lastDone && gen <= lastDone + 1, `round ${rounds}: ${gen} after ${lastDone}`);
    if (active !== undefined) t.is(active.tokens?.accessToken, `at-${gen}`);
    t.is((await store.activeGenerations([grantKey("filler-299")])).size, 1);
    // The interrupted write's temp file is gone.
    t.deepEqual((await fs.readdir(dir)).sort(), [LOCK_FILE, STATE_FILE].sort());
    await store.close();
  }
  t.true(interrupted > 0, `no kill landed mid-write in ${rounds} rounds`);
});

test("opening with a keyring that cannot read the state fails at once with a SealingError", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  await store.insert(live(grantKey("g"), 1));
  await store.close();
  const other = createKeyring([{ id: "z", key: randomBytes(32) }]);
  const err = await t.throwsAsync(createFileStore({ dir, keyring: other }), {
    instanceOf: SealingError,
  });
  t.is(err?.code, "KEY_NOT_FOUND");
  t.true(err?.message.startsWith(`file store ${path.join(dir, STATE_FILE)}, token 1: `));
  const impostor = createKeyring([{ id: "a", key: randomBytes(32) }]);
  const wrong = await t.throwsAsync(createFileStore({ dir, keyring: impostor }), {
    instanceOf: SealingError,
  });
  t.is(wrong?.code, "DECRYPT_FAILED");
  // The failed opens released the lock.
  await (await createFileStore({ dir, keyring: ring })).close();
});

test("a corrupt state file is refused, not replaced by an empty store", async (t) => {
  const dir = await tempDir();
  await fs.mkdir(dir, { recursive: true });
  const file = path.join(dir, STATE_FILE);
  for (const [content, why] of [
    ["{not json", "is not valid JSON"],
    ['{"format":"other"}', "is not a tokenvend-file-store file"],
    [
      '{"format":"tokenvend-file-store","version":9,"tokens":[]}',
      "has version 9; this version reads 1",
    ],
    [
      '{"format":"tokenvend-file-store","version":1,"tokens":[{"key":"x","kind":"grant","grant":"y"}]}',
      "token 1 is malformed",
    ],
  ] as const) {
    await fs.writeFile(file, content);
    const err = await t.throwsAsync(createFileStore({ dir, keyring: ring }), {
      instanceOf: StoreError,
    });
    t.is(err?.code, "CORRUPT");
    t.is(err?.message, `file store: ${file} ${why}`);
    t.is(await fs.readFile(file, "utf8"), content);
  }
});

test("a failed write leaves the store as it was on disk, and readers never saw the change", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  const key = grantKey("g");
  await store.insert(live(key, 1));
  // Make the rename fail: the state file's name is now a non-empty directory.
  await fs.rm(store.path);
  await fs.mkdir(store.path);
  await fs.writeFile(path.join(store.path, "x"), "");
  const err = await t.throwsAsync(store.insert(live(key, 2)), { instanceOf: StoreError });
  t.is(err?.code, "IO");
  t.regex(err?.message ?? "", /^file store: write .* failed \((EISDIR|ENOTEMPTY|EEXIST)\)$/);
  t.is((await store.getActive(key))?.generation, 1);
  t.is(await store.pruneBelow(key, 5).catch((e: StoreError) => e.code), "IO");
  t.is((await store.getActive(key))?.generation, 1);
  await fs.rm(store.path, { recursive: true });
  t.deepEqual(await store.insert(live(key, 2)), { inserted: true });
  await store.close();
  t.deepEqual((await fs.readdir(dir)).sort(), [STATE_FILE]);
});
