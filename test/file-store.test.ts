// The file adapter on real temp directories: the shared contract suites, then what only this
// adapter has: file modes, what is in the bytes on disk, restarts, the directory lock, and a
// writer killed with SIGKILL in the middle of its writes.

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import test from "ava";
import { grantKey, keyId, type LiveRecord, sessionKey } from "../src/core/token.ts";
import { LOCK_FILE } from "../src/store/directory-lock.ts";
import { createFileStore } from "../src/store/file-store.ts";
import { createKeyring, generateKey, parseKeyring, SealingError } from "../src/store/sealing.ts";
import { STATE_FILE } from "../src/store/state-file.ts";
import { StoreError } from "../src/store/store-error.ts";
import { claimContract, live, storeContract, uniqueSession } from "./support/store-contract.ts";

const KEYS = `a:${generateKey()}`;
const ring = parseKeyring(KEYS);
const FILE_STORE_URL = pathToFileURL(path.resolve("src/store/file-store.ts")).href;
const SEALING_URL = pathToFileURL(path.resolve("src/store/sealing.ts")).href;

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-file-store-"));
  dirs.push(dir);
  return path.join(dir, "store"); // created by the store
}
test.after.always(async () => {
  for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
});

const factory = { create: async () => createFileStore({ dir: await tempDir(), keyring: ring }) };
storeContract(test, "file store", factory);
claimContract(test, "file store", factory);

const mode = async (p: string) => (await fs.stat(p)).mode & 0o777;

test("the directory is 0700, the state file and the lock 0600", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  await store.insert(live(grantKey("g"), 1));
  t.is(store.path, path.join(dir, STATE_FILE));
  t.is(await mode(dir), 0o700);
  t.is(await mode(store.path), 0o600);
  t.is(await mode(path.join(dir, LOCK_FILE)), 0o600);
  await store.close();
  await t.throwsAsync(fs.access(path.join(dir, LOCK_FILE))); // released on close
});

test("an existing directory with wider permissions is narrowed to 0700", async (t) => {
  const dir = await tempDir();
  await fs.mkdir(dir, { mode: 0o755 });
  await fs.chmod(dir, 0o755);
  const store = await createFileStore({ dir, keyring: ring });
  t.is(await mode(dir), 0o700);
  await store.close();
});

test("the bytes on disk hold no token material; the token fields are sealed values", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  const secrets: string[] = [];
  for (let i = 0; i < 5; i++) {
    const at = `access-${randomBytes(12).toString("hex")}`;
    const rt = `refresh-${randomBytes(12).toString("hex")}`;
    const idt = `idtoken-${randomBytes(12).toString("hex")}`;
    secrets.push(at, rt, idt);
    const r = live(sessionKey(uniqueSession(), "corp"), 1, at) as LiveRecord;
    await store.insert({ ...r, tokens: { ...r.tokens, refreshToken: rt, idToken: idt } });
  }
  await store.close();
  const bytes = await fs.readFile(path.join(dir, STATE_FILE));
  const text = bytes.toString("latin1");
  for (const s of secrets) {
    t.false(text.includes(s));
    t.false(text.includes(Buffer.from(s).toString("base64")));
    t.false(text.includes(Buffer.from(s).toString("hex")));
  }
  const state = JSON.parse(bytes.toString("utf8"));
  t.is(state.format, "tokenvend-file-store");
  t.is(state.version, 1);
  t.is(state.tokens.length, 5);
  for (const doc of state.tokens) {
    t.regex(doc.accessToken, /^v1:a:/);
    t.regex(doc.refreshToken, /^v1:a:/);
    t.regex(doc.idToken, /^v1:a:/);
    t.is(doc.kid, "a");
  }
});

test("everything survives close and reopen", async (t) => {
  const dir = await tempDir();
  const s = uniqueSession();
  const a = sessionKey(s, "a");
  const b = sessionKey(s, "b");
  const g = grantKey("billing");
  let store = await createFileStore({ dir, keyring: ring });
  for (let gen = 1; gen <= 3; gen++) await store.insert(live(a, gen));
  await store.insert(live(b, 1));
  await store.insert({ key: b, generation: 2, reason: "revoked" });
  await store.insert(live(g, 7));
  await store.pruneBelow(a, 3);
  const before = {
    a: await store.getActive(a),
    session: await store.getSession(s),
    gens: await store.activeGenerations([a, b, g]),
  };
  await store.close();

  store = await createFileStore({ dir, keyring: ring });
  t.deepEqual(await store.getActive(a), before.a);
  t.deepEqual(await store.getActive(a), live(a, 3));
  t.deepEqual(await store.getSession(s), before.session);
  t.deepEqual(
    await store.activeGenerations([a, b, g]),
    new Map([
      [keyId(a), 3],
      [keyId(b), 2],
      [keyId(g), 7],
    ]),
  );
  t.is((await store.getActive(b))?.reason, "revoked");
  t.is(await store.pruneBelow(a, 3), 0); // the pruned generations stayed pruned
  // Claims are not kept across restarts (one process per directory; see file-store.ts).
  t.true((await store.claim({ key: a, generation: 3, owner: "x", leaseUntil: 1 })).acquired);
  await store.close();
});

test("a second store on the same directory is refused, naming the pid and the directory", async (t) => {
  const dir = await tempDir();
  const first = await createFileStore({ dir, keyring: ring });
  t.false(first.shared); // nobody else can write it while it is open
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

/** Runs `code` (an ES module) in a child node; lines it prints come back one by one. */
function child(code: string, env: Record<string, string> = {}) {
  const proc: ChildProcess = spawn(process.execPath, ["--input-type=module", "-e", code], {
    env: { ...process.env, TOKENVEND_ENCRYPTION_KEYS: KEYS, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  // "close": after the exit and after every line it printed has been read.
  const exited = new Promise<void>((resolve) => proc.once("close", () => resolve()));
  return { proc, lines, exited, stderr: () => stderr };
}

/**
 * Resolves at the first line of `c` that `match` accepts. Rejects, with its stderr, when the child
 * exits first or prints no such line within `timeoutMs`, rather than waiting for AVA's timeout.
 */
function waitForLine(
  c: ReturnType<typeof child>,
  match: (line: string) => boolean,
  timeoutMs = 30_000,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.lines.off("line", onLine);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onLine = (line: string) => {
      if (match(line)) settle();
    };
    const timer = setTimeout(
      () => settle(new Error(`child printed no awaited line in ${timeoutMs} ms; ${c.stderr()}`)),
      timeoutMs,
    );
    c.lines.on("line", onLine);
    void c.exited.then(() =>
      settle(new Error(`child exited before the awaited line; ${c.stderr()}`)),
    );
  });
}

/** The lock file names this process and a fresh token of its own. */
const ourLock = new RegExp(`^${process.pid} [0-9a-f-]{36}\\n$`);

const openInChild = (dir: string) => `
  import { createFileStore } from ${JSON.stringify(FILE_STORE_URL)};
  import { parseKeyring } from ${JSON.stringify(SEALING_URL)};
  const store = await createFileStore({
    dir: ${JSON.stringify(dir)},
    keyring: parseKeyring(process.env.TOKENVEND_ENCRYPTION_KEYS),
  });
`;

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

test("a lock naming this process's pid but not one of its locks (a restarted container) is taken over", async (t) => {
  const dir = await tempDir();
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, LOCK_FILE), `${process.pid} some-earlier-incarnation\n`);
  const store = await createFileStore({ dir, keyring: ring });
  t.regex(await fs.readFile(path.join(dir, LOCK_FILE), "utf8"), ourLock);
  await store.close();
});

test("a lock with garbage in it is taken over", async (t) => {
  const dir = await tempDir();
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, LOCK_FILE), "");
  const store = await createFileStore({ dir, keyring: ring });
  t.regex(await fs.readFile(path.join(dir, LOCK_FILE), "utf8"), ourLock);
  await store.close();
  await t.throwsAsync(fs.access(path.join(dir, LOCK_FILE))); // and released on close
});

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

test("a caller that aborts while its write waits in the queue writes nothing", async (t) => {
  const dir = await tempDir();
  const store = await createFileStore({ dir, keyring: ring });
  const key = grantKey("g");
  const ac = new AbortController();
  const first = store.insert(live(key, 1));
  const second = store.insert(live(key, 2), { signal: ac.signal });
  ac.abort(new Error("gave up"));
  await first;
  t.is((await t.throwsAsync(second))?.message, "gave up");
  t.is((await store.getActive(key))?.generation, 1);
  const already = new AbortController();
  already.abort(new Error("before"));
  t.is((await t.throwsAsync(store.getActive(key, { signal: already.signal })))?.message, "before");
  await store.close();
  const closed = await t.throwsAsync(store.getActive(key), { instanceOf: StoreError });
  t.is(closed?.code, "UNAVAILABLE");
});

test("reencrypt moves every document to the new primary in one write", async (t) => {
  const dir = await tempDir();
  const oldKey = { id: "old", key: randomBytes(32) };
  const newKey = { id: "new", key: randomBytes(32) };
  let store = await createFileStore({ dir, keyring: createKeyring([oldKey]) });
  for (let i = 0; i < 5; i++) await store.insert(live(grantKey(`g${i}`), 1, `token-${i}`));
  await store.insert({ key: grantKey("g0"), generation: 2, reason: "revoked" });
  await store.close();

  // Without the old key the store cannot start; with it as a secondary it can.
  const missing = await t.throwsAsync(createFileStore({ dir, keyring: createKeyring([newKey]) }));
  t.is((missing as SealingError).code, "KEY_NOT_FOUND");
  store = await createFileStore({ dir, keyring: createKeyring([newKey, oldKey]) });
  t.is(await store.reencrypt(), 5); // the revocation has nothing sealed
  t.is(await store.reencrypt(), 0);
  await store.close();
  const state = JSON.parse(await fs.readFile(path.join(dir, STATE_FILE), "utf8"));
  t.deepEqual(state.tokens.map((d: { kid?: string }) => d.kid ?? "-").sort(), [
    "-",
    "new",
    "new",
    "new",
    "new",
    "new",
  ]);
  // The old key can go now.
  store = await createFileStore({ dir, keyring: createKeyring([newKey]) });
  t.is((await store.getActive(grantKey("g4")))?.tokens?.accessToken, "token-4");
  await store.close();
});
