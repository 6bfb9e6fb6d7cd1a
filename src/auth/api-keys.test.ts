// API keys: only their hash is kept; a key is known, unknown, malformed or
// expired, and the error says which without echoing it.

import test from "ava";
import { createApiKeys, generateApiKey, hashApiKey } from "./api-keys.ts";
import { AuthError } from "./caller.ts";

const reason = (f: () => unknown) => {
  try {
    f();
    return "OK";
  } catch (err) {
    return err instanceof AuthError ? `${err.reason}: ${err.message}` : String(err);
  }
};

test("a generated key has the tvk_ prefix, its id and 32 random bytes; its entry holds only the hash", (t) => {
  const { key, entry } = generateApiKey("ci-runner");
  t.regex(key, /^tvk_ci-runner_[A-Za-z0-9_-]{43}$/);
  t.deepEqual(entry, { id: "ci-runner", sha256: hashApiKey(key) });
  t.false(JSON.stringify(entry).includes(key.slice(-43)));
  t.throws(() => generateApiKey("Bad_Id"), { instanceOf: RangeError });
});

test("known, unknown, tampered, malformed and expired keys", (t) => {
  let now = 1_000;
  const a = generateApiKey("a");
  const b = generateApiKey("b");
  const keys = createApiKeys([a.entry, { ...b.entry, expiresAt: 2_000 }], () => now);
  t.deepEqual(keys.verify(a.key), { id: "api-key:a", method: "api-key", expiresAt: undefined });
  t.is(
    reason(() => keys.verify(b.key)),
    "OK",
  );
  const tampered = `${a.key.slice(0, -1)}${a.key.endsWith("A") ? "B" : "A"}`;
  t.is(
    reason(() => keys.verify(tampered)),
    "UNKNOWN_API_KEY: the API key is not a known one",
  );
  t.is(
    reason(() => keys.verify(generateApiKey("c").key)),
    "UNKNOWN_API_KEY: the API key is not a known one",
  );
  t.is(
    reason(() => keys.verify("tvk_a_short")),
    "MALFORMED_CREDENTIALS: the API key is malformed",
  );
  now = 2_000;
  t.is(
    reason(() => keys.verify(b.key)),
    "API_KEY_EXPIRED: API key b has expired",
  );
});
