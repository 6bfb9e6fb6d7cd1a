// Tokens preloaded from configuration (src/config-bootstrap.ts): what is accepted, what becomes of
// it in the store (src/ops/seed.ts), and errors that name the source, entry and field without
// quoting a token.

import test from "ava";
import { parseConfig } from "../src/config.ts";
import { grantKey, sessionKey } from "../src/core/token.ts";
import { bootstrapRecord, seedStore } from "../src/ops/seed.ts";
import { createMemoryStore } from "../src/store/memory-store.ts";

const base = {
  providers: {
    corp: { tokenEndpoint: "http://127.0.0.1:9/token", clientId: "c", authMethod: "none" },
  },
  grants: { billing: { provider: "corp" } },
};
const load = (env: Record<string, string>, files: Record<string, string> = {}, extra = {}) =>
  parseConfig(
    { ...base, ...extra },
    {
      env,
      readFile: (p) => {
        const f = files[p];
        if (f === undefined) throw new Error(`ENOENT: ${p}`);
        return f;
      },
    },
  );

test("a file and the environment preload sessions and grants; each becomes generation 1 of its key", async (t) => {
  const config = load(
    {
      TOKENVEND_BOOTSTRAP:
        '{"grants":[{"grant":"billing","accessToken":"g-at","expiresIn":"30m"}]}',
    },
    {
      "/b.yaml": [
        "sessions:",
        "  - sessionId: s1",
        "    provider: corp",
        "    accessToken: s-at",
        "    refreshToken: s-rt",
        "    expiresAt: 2030-01-01T00:00:00Z",
        "    scopes: [a, b]",
        "    subject: alice",
        "    clientId: web",
        "    owner: system:serviceaccount:apps:builder",
        "  - { sessionId: s2, provider: corp, refreshToken: only-rt }",
      ].join("\n"),
    },
    { bootstrap: { file: "/b.yaml" } },
  );
  t.is(config.bootstrap.length, 3);
  const now = 1_800_000_000_000;
  const [s1, s2, g] = config.bootstrap.map((b) => bootstrapRecord(b, now));
  t.deepEqual(s1, {
    key: sessionKey("s1", "corp"),
    generation: 1,
    reason: "stored",
    tokens: {
      accessToken: "s-at",
      refreshToken: "s-rt",
      idToken: undefined,
      tokenType: "Bearer",
      scopes: ["a", "b"],
      issuedAt: now,
      expiresAt: Date.parse("2030-01-01T00:00:00Z"),
      subject: "alice",
      clientId: "web",
      owner: "system:serviceaccount:apps:builder",
    },
  });
  t.false("owner" in (s2?.tokens ?? {}), "no owner unless one is named");
  // Only a refresh token: stored already expired, so the first call refreshes it.
  t.like(s2, {
    tokens: { accessToken: "", refreshToken: "only-rt", expiresAt: now, issuedAt: now },
  });
  t.like(g, {
    key: grantKey("billing"),
    reason: "granted",
    tokens: { expiresAt: now + 1_800_000 },
  });

  const store = createMemoryStore();
  t.deepEqual(await seedStore(store, config.bootstrap, { nowMs: now }), { stored: 3, present: 0 });
  t.deepEqual(await seedStore(store, config.bootstrap, { nowMs: now + 1 }), {
    stored: 0,
    present: 3,
  });
  t.is((await store.getActive(sessionKey("s1", "corp")))?.tokens?.issuedAt, now);
  // Revoked since, its generation 1 pruned: a restart does not bring it back.
  const s1Key = sessionKey("s1", "corp");
  await store.insert({ key: s1Key, generation: 2, reason: "revoked" });
  await store.pruneBelow(s1Key, 2);
  t.deepEqual(await seedStore(store, config.bootstrap, { nowMs: now + 2 }), {
    stored: 0,
    present: 3,
  });
  t.is((await store.getActive(s1Key))?.generation, 2);
});

test("bootstrap errors name the source, the entry and the field, and never quote a token", (t) => {
  const bad = (doc: string, msg: RegExp) => {
    const err = t.throws(() => load({ TOKENVEND_BOOTSTRAP: doc }), { message: msg });
    t.false(err?.message.includes("sekrit"), err?.message);
  };
  bad(
    "sessions: [{ sessionId: s, provider: nope, refreshToken: sekrit }]",
    /TOKENVEND_BOOTSTRAP: sessions\[0\]\.provider must name a configured provider/,
  );
  bad(
    "sessions: [{ sessionId: s, provider: corp }]",
    /sessions\[0\] needs a refreshToken or an accessToken/,
  );
  bad(
    "sessions: [{ sessionId: s, provider: corp, accessToken: sekrit }]",
    /sessions\[0\]: an accessToken needs expiresIn or expiresAt/,
  );
  bad(
    "grants: [{ grant: billing, accessToken: sekrit, expiresIn: soon }]",
    /grants\[0\]\.expiresIn must be a duration/,
  );
  bad(
    "grants: [{ grant: nope, accessToken: sekrit, expiresIn: 1h }]",
    /grants\[0\]\.grant must name a configured grant/,
  );
  bad(
    "sessions: [{ sessionId: s, provider: corp, refreshToken: sekrit, refresh: x }]",
    /sessions\[0\]\.refresh is not an option/,
  );
  bad(
    "sessions: [{ sessionId: s, provider: corp, accessToken: sekrit, expiresAt: tomorrow }]",
    /expiresAt must be an ISO 8601 time/,
  );
  bad(
    "sessions: [{ sessionId: s, provider: corp, refreshToken: sekrit }, { sessionId: s, provider: corp, refreshToken: sekrit }]",
    /sessions\[1\] preloads the same key as TOKENVEND_BOOTSTRAP: sessions\[0\]/,
  );
  bad(
    "sessions: [{ sessionId: s, provider: corp, refreshToken: sekrit\n  - oops: [",
    /TOKENVEND_BOOTSTRAP: not valid YAML or JSON/,
  );
  t.throws(() => load({ TOKENVEND_BOOTSTRAP_FILE: "/missing.yaml" }), {
    message: /TOKENVEND_BOOTSTRAP_FILE \(\/missing\.yaml\): cannot be read/,
  });
});
