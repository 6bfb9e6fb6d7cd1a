// A session's owner is sealed like its tokens: a dump does not show it, it
// opens only in its own document, and re-sealing keeps it.

import { randomBytes } from "node:crypto";
import test from "ava";
import type { LiveRecord } from "../core/token.ts";
import { createKeyring, SealingError } from "./sealing.ts";
import { fromDocument, resealDocument, toDocument } from "./token-document.ts";

const ring = createKeyring([{ id: "k1", key: randomBytes(32) }]);
const record = (sessionId: string, owner?: string): LiveRecord => ({
  key: { kind: "session", sessionId, provider: "corp" },
  generation: 1,
  reason: "stored",
  tokens: {
    accessToken: "at",
    tokenType: "Bearer",
    scopes: [],
    issuedAt: 1,
    expiresAt: 2,
    ...(owner !== undefined ? { owner } : {}),
  },
});

test("the owner is stored sealed and opens back to itself; a record without one stays without", (t) => {
  const doc = toDocument(record("s1", "system:serviceaccount:apps:alice"), ring, 0);
  t.false(JSON.stringify(doc).includes("alice"));
  t.regex(doc.owner ?? "", /^v1:k1:/);
  t.is(
    (fromDocument({ ...doc }, ring) as LiveRecord).tokens.owner,
    "system:serviceaccount:apps:alice",
  );
  const bare = toDocument(record("s2"), ring, 0);
  t.false("owner" in bare);
  t.false("owner" in (fromDocument({ ...bare }, ring) as LiveRecord).tokens);
});

test("an owner moved to another session's document does not open; re-sealing keeps it", (t) => {
  const mine = toDocument(record("s1", "tenant:web"), ring, 0);
  const theirs = toDocument(record("s2", "tenant:other"), ring, 0);
  const err = t.throws(() => fromDocument({ ...theirs, owner: mine.owner }, ring));
  t.true(err instanceof SealingError && err.code === "DECRYPT_FAILED");
  const resealed = { ...mine, ...resealDocument({ ...mine }, ring) };
  t.not(resealed.owner, mine.owner);
  t.is((fromDocument(resealed, ring) as LiveRecord).tokens.owner, "tenant:web");
});
