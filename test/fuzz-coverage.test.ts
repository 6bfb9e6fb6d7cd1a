// The fuzzers' coverage feedback (fuzz/coverage.ts): a branch of src/ that runs for the first
// time counts as fresh, then never again; code outside src/ does not count.

import test from "ava";
import { attribute, startCoverage } from "../fuzz/coverage.ts";
import { duration } from "../src/config-values.ts";
import { parseRetryAfterMs } from "../src/idp/retry-after.ts";

test.serial(
  "a branch of src/ counts once, when it first runs; the test's own code never",
  async (t) => {
    const c = await startCoverage();
    t.teardown(() => c.stop());
    t.is((await c.fresh()).size, 0, "nothing ran yet");
    duration("5m", "x", 0);
    const first = (await c.fresh()).size;
    t.true(first > 0, "the parser's blocks ran");
    duration("7m", "x", 0);
    t.is((await c.fresh()).size, 0, "the same path again: nothing new");
    t.throws(() => duration("nonsense", "x", 0));
    t.true((await c.fresh()).size > 0, "the refusal's branch is new");
    let x = 0;
    for (let i = 0; i < 10; i++) x += i % 2 === 0 ? 1 : 2;
    t.is(x, 15);
    t.is((await c.fresh()).size, 0, "test code is not src/");
    t.true(c.blocks > first, "both paths are counted");
  },
);

test.serial(
  "attribute() names the inputs of a batch that ran its new blocks, and only those",
  async (t) => {
    const c = await startCoverage();
    t.teardown(() => c.stop());
    // A parser no other test here ran: V8 counts blocks only of code compiled while counting.
    const run = async (input: string) => parseRetryAfterMs(input, 0);
    await run("120");
    await c.fresh();
    const batch = ["5", "Wed, 21 Oct 2015 07:28:00 GMT", "7", "Thu, 22 Oct 2015 07:28:00 GMT"];
    for (const input of batch) await run(input);
    const found: string[] = [];
    await attribute(c, batch, run, (input) => found.push(input));
    t.deepEqual(found, [batch[1]], "the date's branch, first reached by the first date");
    for (const input of batch) await run(input);
    const again: string[] = [];
    await attribute(c, batch, run, (input) => again.push(input));
    t.deepEqual(again, [], "nothing new the second time");
  },
);
