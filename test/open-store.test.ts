// openStore from plain options: the adapter each kind opens, keys from text, files or a loaded
// keyring, and the refusal to open an encrypting store without a key.

import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import test from "ava";
import { grantKey } from "../src/core/token.ts";
import { loadKeyring, openStore } from "../src/store/open-store.ts";
import { generateKey, parseKeyring, SealingError } from "../src/store/sealing.ts";
import { live } from "./support/store-contract.ts";

const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "tokenvend-open-store-"));
test.after.always(() => fs.rm(tmp, { recursive: true, force: true }));

test("a memory store opens without keys", async (t) => {
  const store = await openStore({ store: { kind: "memory" }, keys: {} });
  t.is(store.kind, "memory");
  await store.close();
});

test("a file store without a key is refused with SealingError INVALID_KEY naming what to set", async (t) => {
  const dir = path.join(tmp, "no-key");
  const err = await t.throwsAsync(openStore({ store: { kind: "file", dir }, keys: {} }), {
    instanceOf: SealingError,
  });
  t.is(err?.code, "INVALID_KEY");
  t.true(
    err?.message.startsWith(
      "the file store encrypts tokens at rest and needs a key: set TOKENVEND_ENCRYPTION_KEYS=",
    ),
  );
  await t.throwsAsync(fs.access(dir)); // nothing was created
});

test("a MongoDB store without a key is refused before any connection is made", async (t) => {
  const err = await t.throwsAsync(
    openStore({
      store: { kind: "mongo", uri: "mongodb://127.0.0.1:1/", dbName: "x" },
      keys: { keyFiles: [] },
    }),
    { instanceOf: SealingError },
  );
  t.is(err?.code, "INVALID_KEY");
  t.true(err?.message.startsWith("the MongoDB store encrypts tokens at rest and needs a key"));
});

test("a file store opens with a loaded keyring and with key text alike, and reads what the other wrote", async (t) => {
  const dir = path.join(tmp, "keys");
  const text = `a:${generateKey()}`;
  const first = await openStore({
    store: { kind: "file", dir },
    keys: { keyring: parseKeyring(text) },
  });
  t.is(first.kind, "file");
  await first.insert(live(grantKey("g"), 1, "secret"));
  await first.close();
  const second = await openStore({ store: { kind: "file", dir }, keys: { keyText: text } });
  t.is((await second.getActive(grantKey("g")))?.tokens?.accessToken, "secret");
  await second.close();
});

test("loadKeyring: text keys first, then key files; none named is undefined", async (t) => {
  const file = path.join(tmp, "filekey");
  await fs.writeFile(file, generateKey());
  const ring = await loadKeyring({ keyText: `text:${generateKey()}`, keyFiles: [file] });
  t.deepEqual(ring?.ids, ["text", "filekey"]);
  t.is(ring?.primaryId, "text");
  t.is(await loadKeyring({}), undefined);
  t.is(await loadKeyring({ keyFiles: [] }), undefined);
});
