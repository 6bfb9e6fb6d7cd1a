// The TokenStore contract: one suite every adapter must pass.

import type { TestFn } from "ava";
import {
  grantKey,
  keyId,
  type LiveRecord,
  sessionKey,
  type TokenKey,
  type TokenRecord,
} from "../../src/core/token.ts";
import type { TokenStore } from "../../src/core/token-store.ts";

export interface StoreFactory {
  /** A fresh, empty store (its own namespace when the backend is shared). */
  create(): Promise<TokenStore>;
  /**
   * Whether a NUL character in a plaintext field (subject, scopes) can be stored. MongoDB's BSON
   * strings can hold it; FerretDB's PostgreSQL backend (jsonb) cannot, and refuses the write.
   */
  readonly nulInStrings?: boolean;
}

let seq = 0;
/** A unique session id per test, so tests can share a backend. */
export const uniqueSession = (prefix = "s") => `${prefix}-${process.pid}-${Date.now()}-${seq++}`;

export function live(
  key: TokenKey,
  generation: number,
  accessToken = `at-${generation}`,
): TokenRecord {
  return {
    key,
    generation,
    reason: generation === 1 ? "stored" : "refreshed",
    tokens: {
      accessToken,
      refreshToken: `rt-${generation}`,
      idToken: undefined,
      tokenType: "Bearer",
      scopes: ["openid", "offline_access"],
      issuedAt: 1_700_000_000_000,
      expiresAt: 1_700_000_000_000 + 3_600_000,
      subject: "alice",
      clientId: "web",
    },
  };
}

export function storeContract(test: TestFn, name: string, factory: StoreFactory): void {
  test(`${name}: an unknown key has no active generation`, async (a) => {
    const store = await factory.create();
    try {
      a.is(await store.getActive(sessionKey(uniqueSession(), "p")), undefined);
      a.deepEqual(await store.getSession(uniqueSession()), []);
      a.deepEqual(await store.activeGenerations([grantKey(uniqueSession("g"))]), new Map());
    } finally {
      await store.close();
    }
  });

  test(`${name}: a record round-trips with every field`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      const r = live(key, 1);
      a.deepEqual(await store.insert(r), { inserted: true });
      a.deepEqual(await store.getActive(key), r);
    } finally {
      await store.close();
    }
  });

  test(`${name}: the active record is the highest generation`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      await store.insert(live(key, 1));
      await store.insert(live(key, 3));
      await store.insert(live(key, 2));
      a.is((await store.getActive(key))?.generation, 3);
      a.deepEqual(await store.activeGenerations([key]), new Map([[keyId(key), 3]]));
    } finally {
      await store.close();
    }
  });

  test(`${name}: inserting an existing generation writes nothing and returns the winner`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      const winner = live(key, 2, "winner");
      await store.insert(winner);
      const res = await store.insert(live(key, 2, "loser"));
      a.false(res.inserted);
      a.deepEqual(res.inserted ? undefined : res.winner, winner);
      a.is((await store.getActive(key))?.tokens?.accessToken, "winner");
    } finally {
      await store.close();
    }
  });

  test(`${name}: concurrent writers of one generation: exactly one wins, all see the same winner`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => store.insert(live(key, 1, `writer-${i}`))),
      );
      const winners = results.filter((r) => r.inserted);
      a.is(winners.length, 1);
      const active = await store.getActive(key);
      for (const r of results) if (!r.inserted) a.deepEqual(r.winner, active);
    } finally {
      await store.close();
    }
  });

  test(`${name}: a revocation generation hides the tokens below it`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      await store.insert(live(key, 1));
      await store.insert({ key, generation: 2, reason: "revoked" });
      const active = await store.getActive(key);
      a.is(active?.reason, "revoked");
      a.is(active?.tokens, undefined);
      // A refresh racing the revocation loses: generation 2 exists.
      const late = await store.insert(live(key, 2, "late"));
      a.false(late.inserted);
    } finally {
      await store.close();
    }
  });

  test(`${name}: getSession returns each provider's active generation of that session only`, async (a) => {
    const store = await factory.create();
    try {
      const s = uniqueSession();
      await store.insert(live(sessionKey(s, "a"), 1));
      await store.insert(live(sessionKey(s, "a"), 2));
      await store.insert(live(sessionKey(s, "b"), 1));
      await store.insert(live(sessionKey(uniqueSession(), "a"), 1));
      await store.insert(live(grantKey(s), 1));
      const got = (await store.getSession(s))
        .map((r) => [r.key.kind === "session" ? r.key.provider : "?", r.generation])
        .sort();
      a.deepEqual(got, [
        ["a", 2],
        ["b", 1],
      ]);
    } finally {
      await store.close();
    }
  });

  test(`${name}: activeGenerations answers many keys at once and leaves out absent ones`, async (a) => {
    const store = await factory.create();
    try {
      const keys = Array.from({ length: 50 }, (_, i) => sessionKey(uniqueSession(), `p${i % 3}`));
      for (const [i, k] of keys.entries())
        if (i % 2 === 0) await store.insert(live(k, (i % 5) + 1));
      const gens = await store.activeGenerations(keys);
      a.is(gens.size, 25);
      for (const [i, k] of keys.entries())
        a.is(gens.get(keyId(k)), i % 2 === 0 ? (i % 5) + 1 : undefined);
    } finally {
      await store.close();
    }
  });

  test(`${name}: pruneBelow removes older generations and keeps the active one`, async (a) => {
    const store = await factory.create();
    try {
      const key = grantKey(uniqueSession("g"));
      for (let g = 1; g <= 4; g++) await store.insert(live(key, g));
      a.is(await store.pruneBelow(key, 4), 3);
      a.is(await store.pruneBelow(key, 4), 0);
      a.is((await store.getActive(key))?.generation, 4);
    } finally {
      await store.close();
    }
  });

  test(`${name}: ids with separators and unicode-free odd characters stay distinct`, async (a) => {
    const store = await factory.create();
    try {
      const base = uniqueSession();
      const k1 = sessionKey(`${base}:a`, "p");
      const k2 = sessionKey(`${base}`, "p:a");
      await store.insert(live(k1, 1, "one"));
      await store.insert(live(k2, 1, "two"));
      a.is((await store.getActive(k1))?.tokens?.accessToken, "one");
      a.is((await store.getActive(k2))?.tokens?.accessToken, "two");
    } finally {
      await store.close();
    }
  });

  // Added with the file and MongoDB adapters: what a stored form must keep, whatever it is.

  test(`${name}: a record without the optional fields round-trips exactly`, async (a) => {
    const store = await factory.create();
    try {
      const key = grantKey(uniqueSession("g"));
      const r: TokenRecord = {
        key,
        generation: 1,
        reason: "granted",
        tokens: {
          accessToken: "at",
          refreshToken: undefined,
          idToken: undefined,
          tokenType: "DPoP",
          scopes: [],
          issuedAt: 0,
          expiresAt: 1,
          subject: undefined,
          clientId: undefined,
        },
      };
      a.deepEqual(await store.insert(r), { inserted: true });
      a.deepEqual(await store.getActive(key), r);
    } finally {
      await store.close();
    }
  });

  test(`${name}: unicode, separators and large token values round-trip`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(`${uniqueSession()}#1#accessToken`, "p\u00e4#2");
      const base = live(key, 1) as LiveRecord;
      const nul = factory.nulInStrings === false ? "" : "\u0000 ";
      const r: TokenRecord = {
        ...base,
        tokens: {
          ...base.tokens,
          accessToken: `${"\u{1F511}\u00fc:#,".repeat(1_000)}${"x".repeat(16_384)}`,
          refreshToken: "",
          idToken: "e30.e30.",
          subject: `\u00c5sa ${nul}\u001f`,
          scopes: ["a b", "\u00e9"],
        },
      };
      await store.insert(r);
      a.deepEqual(await store.getActive(key), r);
      a.deepEqual(await store.getSession((key as { sessionId: string }).sessionId), [r]);
    } finally {
      await store.close();
    }
  });

  test(`${name}: getSession reports a revoked provider by its revocation`, async (a) => {
    const store = await factory.create();
    try {
      const s = uniqueSession();
      await store.insert(live(sessionKey(s, "a"), 1));
      await store.insert({ key: sessionKey(s, "a"), generation: 2, reason: "revoked" });
      await store.insert(live(sessionKey(s, "b"), 1));
      const got = (await store.getSession(s))
        .map(
          (r) => `${r.key.kind === "session" ? r.key.provider : "?"}@${r.generation}:${r.reason}`,
        )
        .sort();
      a.deepEqual(got, ["a@2:revoked", "b@1:stored"]);
    } finally {
      await store.close();
    }
  });

  test(`${name}: activeGenerations of no keys is empty; a repeated key is answered once`, async (a) => {
    const store = await factory.create();
    try {
      a.deepEqual(await store.activeGenerations([]), new Map());
      const key = grantKey(uniqueSession("g"));
      await store.insert(live(key, 2));
      a.deepEqual(await store.activeGenerations([key, key, key]), new Map([[keyId(key), 2]]));
    } finally {
      await store.close();
    }
  });

  test(`${name}: a grant and a session provider of the same name are different keys`, async (a) => {
    const store = await factory.create();
    try {
      const name = uniqueSession("n");
      await store.insert(live(grantKey(name), 1, "grant"));
      await store.insert(live(sessionKey(name, name), 1, "session"));
      a.is((await store.getActive(grantKey(name)))?.tokens?.accessToken, "grant");
      a.is((await store.getActive(sessionKey(name, name)))?.tokens?.accessToken, "session");
      a.deepEqual(
        (await store.getSession(name)).map((r) => r.key.kind),
        ["session"],
      );
    } finally {
      await store.close();
    }
  });

  test(`${name}: listActive pages through every key's highest generation once, revocations included`, async (a) => {
    const store = await factory.create();
    try {
      const s = uniqueSession();
      const twice = sessionKey(s, "corp");
      const revoked = sessionKey(s, "other");
      const grant = grantKey(uniqueSession("g"));
      const single = sessionKey(uniqueSession(), "corp");
      const last = sessionKey(uniqueSession(), "third");
      for (const g of [1, 2, 3]) await store.insert(live(twice, g));
      await store.insert(live(revoked, 1));
      await store.insert({ key: revoked, generation: 2, reason: "revoked" });
      await store.insert(live(grant, 4));
      await store.insert(live(single, 1));
      await store.insert(live(last, 7));

      const seen: TokenRecord[] = [];
      let after: string | undefined;
      let pages = 0;
      do {
        const page = await store.listActive({ after, limit: 2 });
        a.true(page.records.length <= 2);
        seen.push(...page.records);
        after = page.next;
        pages++;
      } while (after !== undefined && pages < 20);
      a.is(after, undefined);
      const byKey = new Map(seen.map((r) => [keyId(r.key), r]));
      a.is(byKey.size, seen.length, "no key listed twice");
      a.deepEqual(
        [...byKey.keys()].sort(),
        [twice, revoked, grant, single, last].map(keyId).sort(),
      );
      a.deepEqual(byKey.get(keyId(twice)), await store.getActive(twice));
      a.is(byKey.get(keyId(twice))?.generation, 3);
      a.is(byKey.get(keyId(revoked))?.reason, "revoked");
      a.deepEqual(byKey.get(keyId(grant)), await store.getActive(grant));
      a.is(byKey.get(keyId(last))?.generation, 7);
    } finally {
      await store.close();
    }
  });

  test(`${name}: listActive of an empty store is one empty last page; a limit below 1 is refused`, async (a) => {
    const store = await factory.create();
    try {
      a.deepEqual(await store.listActive({ limit: 100 }), { records: [], next: undefined });
      await a.throwsAsync(store.listActive({ limit: 0 }), { instanceOf: RangeError });
    } finally {
      await store.close();
    }
  });
}

export function claimContract(test: TestFn, name: string, factory: StoreFactory): void {
  test(`${name}: one of many concurrent claimers of a generation acquires it`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.claim({ key, generation: 1, owner: `replica-${i}`, leaseUntil: 2_000_000_000_000 }),
        ),
      );
      const acquired = results.filter((r) => r.acquired);
      a.is(acquired.length, 1);
      const owners = new Set(results.map((r) => (r.acquired ? "" : r.holder.owner)));
      owners.delete("");
      a.is(owners.size, 1);
    } finally {
      await store.close();
    }
  });

  test(`${name}: a claim is released only by its exact holder, exactly once`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      const c = { key, generation: 4, owner: "r1", leaseUntil: 1_000 };
      a.true((await store.claim(c)).acquired);
      a.false(await store.releaseClaim({ ...c, owner: "r2" }));
      a.false(await store.releaseClaim({ ...c, leaseUntil: 999 }));
      const both = await Promise.all([store.releaseClaim(c), store.releaseClaim(c)]);
      a.deepEqual(both.sort(), [false, true]);
      a.true((await store.claim({ ...c, owner: "r2" })).acquired);
    } finally {
      await store.close();
    }
  });

  test(`${name}: sweep deletes old generations and dead claims only`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      for (let g = 1; g <= 3; g++) await store.insert(live(key, g));
      await store.claim({ key, generation: 1, owner: "dead", leaseUntil: 100 });
      await store.claim({ key, generation: 3, owner: "alive", leaseUntil: 10_000 });
      const res = await store.sweep(5_000);
      a.true(res.generations >= 2);
      a.true(res.claims >= 1);
      a.is((await store.getActive(key))?.generation, 3);
      const again = await store.claim({ key, generation: 3, owner: "other", leaseUntil: 20_000 });
      a.false(again.acquired);
      a.true(
        (await store.claim({ key, generation: 1, owner: "other", leaseUntil: 20_000 })).acquired,
      );
    } finally {
      await store.close();
    }
  });

  test(`${name}: unusedSessions finds active sessions with a refresh token obtained before the cut, in order`, async (a) => {
    const store = await factory.create();
    try {
      const provider = uniqueSession("prov");
      const t0 = 1_700_000_000_000;
      const at = (
        key: TokenKey,
        generation: number,
        issuedAt: number,
        refresh = true,
      ): TokenRecord => {
        const r = live(key, generation) as LiveRecord;
        return {
          ...r,
          tokens: { ...r.tokens, issuedAt, refreshToken: refresh ? `rt-${generation}` : undefined },
        };
      };
      const [s1, s2, s3, s4, s5] = [1, 2, 3, 4, 5].map(() => uniqueSession("u")) as [
        string,
        string,
        string,
        string,
        string,
      ];
      await store.insert(at(sessionKey(s1, provider), 1, t0));
      await store.insert(at(sessionKey(s1, provider), 2, t0 + 10)); // renewed: its newest counts
      await store.insert(at(sessionKey(s2, provider), 1, t0 + 5, false)); // nothing to renew with
      await store.insert(at(sessionKey(s3, provider), 1, t0 + 1));
      await store.insert({ key: sessionKey(s3, provider), generation: 2, reason: "revoked" });
      await store.insert(at(sessionKey(s4, provider), 1, t0 + 2));
      await store.insert(at(sessionKey(s5, provider), 1, t0 + 100)); // used recently
      await store.insert(at(sessionKey(uniqueSession("u"), `${provider}-other`), 1, t0));
      const all = await store.unusedSessions(provider, { before: t0 + 50, limit: 10 });
      a.deepEqual(all, [
        { sessionId: s4, generation: 1, issuedAt: t0 + 2 },
        { sessionId: s1, generation: 2, issuedAt: t0 + 10 },
      ]);
      a.deepEqual(await store.unusedSessions(provider, { before: t0 + 50, limit: 1 }), [all[0]]);
      a.deepEqual(
        await store.unusedSessions(provider, { before: t0 + 50, after: all[0], limit: 10 }),
        [all[1]],
      );
      a.deepEqual(await store.unusedSessions(provider, { before: t0 + 2, limit: 10 }), []);
    } finally {
      await store.close();
    }
  });

  test(`${name}: a claim repeated with its owner and lease (a retried insert that had landed) is acquired, not lost to itself`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      const c = { key, generation: 3, owner: "r1", leaseUntil: 7_000 };
      a.deepEqual(await store.claim(c), { acquired: true });
      a.deepEqual(await store.claim(c), { acquired: true });
      const other = await store.claim({ ...c, leaseUntil: 7_001 });
      a.false(other.acquired, "the same owner with another lease is another claim");
      a.true(await store.releaseClaim(c));
    } finally {
      await store.close();
    }
  });

  test(`${name}: renewClaim moves the exact claim's lease and records the renewal; a stale one is refused`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      const c = { key, generation: 1, owner: "r1", leaseUntil: 1_000 };
      a.true((await store.claim(c)).acquired);
      a.is(await store.renewClaim({ ...c, owner: "r2" }, 5_000, undefined), undefined);
      const renewal = live(key, 2, "renewed") as LiveRecord;
      const renewed = await store.renewClaim(c, 5_000, renewal);
      a.deepEqual(renewed, { ...c, leaseUntil: 5_000, renewal });
      // The holder seen by a loser carries the renewal, opened.
      const lost = await store.claim({ ...c, owner: "r2" });
      a.false(lost.acquired);
      if (!lost.acquired) a.deepEqual(lost.holder, { ...c, leaseUntil: 5_000, renewal });
      // The old lease no longer names it.
      a.is(await store.renewClaim(c, 9_000, undefined), undefined);
      a.false(await store.releaseClaim(c));
      a.true(await store.releaseClaim({ ...c, leaseUntil: 5_000 }));
    } finally {
      await store.close();
    }
  });

  test(`${name}: sweep stores the renewal a dead claim carries before deleting the claim`, async (a) => {
    const store = await factory.create();
    try {
      const key = sessionKey(uniqueSession(), "corp");
      await store.insert(live(key, 1));
      const c = { key, generation: 1, owner: "dead", leaseUntil: 100 };
      await store.claim(c);
      await store.renewClaim(c, 200, live(key, 2, "obtained") as LiveRecord);
      const res = await store.sweep(5_000);
      a.true(res.claims >= 1);
      a.is((await store.getActive(key))?.tokens?.accessToken, "obtained");
      a.true((await store.claim({ ...c, owner: "next", leaseUntil: 9_000 })).acquired);
    } finally {
      await store.close();
    }
  });

  test(`${name}: sessionGenerations names each key's active generation and whether it is revoked`, async (a) => {
    const store = await factory.create();
    try {
      const s = uniqueSession();
      const [a1, b1] = [live(sessionKey(s, "a"), 1), live(sessionKey(s, "b"), 1)];
      for (const r of [a1, { ...a1, generation: 2 }, b1, live(grantKey(s), 3)])
        await store.insert(r);
      await store.insert({ key: b1.key, generation: 2, reason: "revoked" });
      const got = (await store.sessionGenerations(s)).sort((x, y) =>
        keyId(x.key).localeCompare(keyId(y.key)),
      );
      a.deepEqual(got, [
        { key: sessionKey(s, "a"), generation: 2, revoked: false },
        { key: sessionKey(s, "b"), generation: 2, revoked: true },
      ]);
      a.deepEqual(await store.sessionGenerations(uniqueSession()), []);
    } finally {
      await store.close();
    }
  });
}
