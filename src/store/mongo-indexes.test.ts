// ensureIndexes() against collections standing in for FerretDB's answers, which a real server
// gives only when PostgreSQL's catalogs race (InternalError, code 1): tried again, up to three
// times; any other failure is final.

import test from "ava";
import type { Collection, Document } from "mongodb";
import { classifyMongoError } from "./mongo-errors.ts";
import { createEnsureIndexes } from "./mongo-indexes.ts";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** A collection whose createIndex fails with `codes` in turn, then succeeds; counts the calls. */
function collection(name: string, codes: number[]) {
  const calls = { n: 0 };
  const col = {
    collectionName: name,
    async createIndex() {
      calls.n++;
      const code = codes.shift();
      if (code !== undefined) throw Object.assign(new Error(`code ${code}`), { code });
      return "ok";
    },
  } as unknown as Collection<Document>;
  return { col, calls };
}

const ensure = (tokens: Collection<Document>, other: Collection<Document>) =>
  createEnsureIndexes({
    tokens,
    claims: other,
    changes: other,
    run: (what, _opts, fn) =>
      fn(new AbortController().signal).catch((e: unknown) => {
        throw classifyMongoError(what, e);
      }),
    logger: quiet,
    dbName: "db",
    prefix: "",
  });

test("a FerretDB InternalError (a catalog race) is tried again; the indexes are made", async (t) => {
  const tokens = collection("tokens", [1, 1]);
  const other = collection("other", []);
  await ensure(tokens.col, other.col)();
  t.is(tokens.calls.n, 4, "two failed tries, then the two token indexes");
  t.is(other.calls.n, 2);
});

test("three InternalErrors in a row, or any other error, fail ensureIndexes (the next call tries again)", async (t) => {
  const stuck = collection("tokens", [1, 1, 1]);
  const run = ensure(stuck.col, collection("other", []).col);
  const err = await t.throwsAsync(run());
  t.regex(err?.message ?? "", /createIndex tokens\.key_generation failed \(code 1\)/);
  t.is(stuck.calls.n, 3);
  await run();
  t.is(stuck.calls.n, 5, "a later call starts over, and succeeds");

  const denied = collection("tokens", [13]);
  await t.throwsAsync(ensure(denied.col, collection("other", []).col)(), {
    message: /code 13/,
  });
  t.is(denied.calls.n, 1, "not tried again");
});
