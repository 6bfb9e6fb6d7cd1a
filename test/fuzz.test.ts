// CI's fixed fuzz budget (the long run is `npm run fuzz`, fuzz/main.ts): 100,000 generated and
// mutated request bodies, starting from the corpus in fuzz/corpus/, across every RPC, on every
// protocol of both listeners of one real replica, and every parser target. The first RPC round
// and the parsers are coverage-guided (fuzz/coverage.ts: inputs that run new blocks of src/ are
// mutated further); the second RPC round runs without coverage, at full speed. What must hold: no
// input is answered INTERNAL or UNKNOWN, goes unanswered or is reset (but for a body over the
// message limit), no internal error is logged, the store changes only through calls that
// succeeded, the replica serves on; no parser throws anything but its documented error, and a
// sealed value opens only in its own place. Seeds are fixed so a failure repeats: run
// `npm run fuzz -- --seed N` with the seed printed here.

import test from "ava";
import { readParserCorpus, readRpcCorpus } from "../fuzz/corpus.ts";
import { type Coverage, startCoverage } from "../fuzz/coverage.ts";
import { fuzzParsers, parserTargets } from "../fuzz/parser-targets.ts";
import { methods } from "../fuzz/rpc-inputs.ts";
import { fuzzRpc } from "../fuzz/rpc-target.ts";

const seed = Number(process.env.TOKENVEND_FUZZ_SEED ?? 20_261_129);
const rounds = 2;
const perRound = 50_000;
// Counting starts before any of src/ runs: V8 counts blocks only of code compiled meanwhile.
let coverage: Coverage | undefined = await startCoverage();

/** One RPC round: the first guided, the second at full speed. */
function rpcRound(round: number) {
  const guided = round === 0;
  test.serial(
    `RPC fuzz ${round + 1}/${rounds}${guided ? ", coverage-guided" : ""}: ${perRound} bodies over every RPC and protocol of both listeners, with no INTERNAL, no hang, the store unchanged by rejected input`,
    async (t) => {
      if (!guided) {
        await coverage?.stop();
        coverage = undefined;
      }
      const r = await fuzzRpc({
        inputs: perRound,
        seed: seed + round,
        corpus: readRpcCorpus(),
        ...(guided && coverage !== undefined ? { coverage } : {}),
      });
      t.log(
        `seed ${seed + round}: ${r.inputs} inputs in ${r.seconds.toFixed(1)} s, gRPC listener ${r.byListener.grpc}, HTTP listener ${r.byListener.http}, ${r.outcomes} distinct outcomes${guided ? `, ${r.blocks} blocks of src/ run, ${r.newCoverage} inputs reached new ones` : ""}`,
      );
      if (guided) {
        // The guidance works: the replica's code was counted and inputs reached new blocks.
        t.true(r.blocks > 500, `${r.blocks} blocks`);
        t.true(r.newCoverage > 0);
      }
      t.deepEqual(r.failures, []);
      t.is(r.internalErrorsLogged, 0);
      t.deepEqual(r.storeViolations, []);
      t.true(r.inputs >= perRound);
      // Both listeners and every RPC got their share, and inputs got past validation.
      t.true(
        r.byListener.grpc > perRound / 5 && r.byListener.http > perRound / 2,
        JSON.stringify(r.byListener),
      );
      for (const m of methods) {
        const counts = r.byMethod[m.name] ?? {};
        const total = Object.values(counts).reduce((a, b) => a + b, 0);
        t.true(total >= perRound / methods.length - 1, `${m.name}: ${total}`);
        t.true((counts["3"] ?? 0) > 0, `${m.name} saw INVALID_ARGUMENT`);
        const past = Object.entries(counts).filter(([code]) => code !== "3" && code !== "8");
        t.true(
          past.length > 0,
          `${m.name}: some inputs got past validation (${JSON.stringify(counts)})`,
        );
      }
    },
  );
}

rpcRound(0);

test.serial(
  "parser fuzz, coverage-guided: config, duration, keys, sealed values, the file store's loader and Retry-After throw only their own errors",
  async (t) => {
    const targets = parserTargets();
    const reports = await fuzzParsers({
      runs: 5_000,
      seed,
      corpus: readParserCorpus(targets.map((x) => x.name)),
      targets,
      ...(coverage !== undefined ? { coverage } : {}),
    });
    t.deepEqual(
      reports.map((r) => r.name),
      ["config", "duration", "keys", "sealed-value", "file-store", "retry-after"],
    );
    for (const r of reports) {
      t.is(r.failure, undefined, `${r.name}: ${JSON.stringify(r.failure)}`);
      t.is(r.runs, 5_000, r.name);
    }
    // Guided: the parsers' code was counted and inputs reached new blocks of it.
    const config = reports.find((r) => r.name === "config");
    t.true((config?.blocks ?? 0) > 50, `config: ${config?.blocks} blocks`);
    t.true(reports.reduce((n, r) => n + r.newCoverage, 0) > 0);
  },
);

rpcRound(1);
