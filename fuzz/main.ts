// `npm run fuzz`: the long run, coverage-guided (fuzz/coverage.ts). The RPC target (every RPC,
// every protocol, both listeners) and every parser target, with the corpus in fuzz/corpus/
// mutated alongside generated inputs. An input that runs blocks of src/ no earlier one ran, or
// reaches a new outcome, is mutated further and kept in the corpus (commit it: CI then starts
// from it); one that breaks a rule is written to fuzz/corpus/failures/ and the run exits 1.
//
//   npm run fuzz                              1,000,000 RPC inputs, 200,000 per parser
//   npm run fuzz -- --inputs 200000 --runs 20000 --seed 42
//
// CI runs the same targets on a fixed budget: test/fuzz.test.ts.

import { parseArgs } from "node:util";
import { keep, readParserCorpus, readRpcCorpus } from "./corpus.ts";
import { startCoverage } from "./coverage.ts";
import { fuzzParsers, parserTargets } from "./parser-targets.ts";
import type { RpcInput } from "./rpc-inputs.ts";
import { fuzzRpc } from "./rpc-target.ts";

const { values } = parseArgs({
  options: {
    inputs: { type: "string", default: "1000000" },
    runs: { type: "string", default: "200000" },
    seed: { type: "string" },
  },
});
const seed = Number(values.seed ?? Math.floor(Math.random() * 2 ** 31));
console.log(`fuzz: seed ${seed} (repeat a run with --seed ${seed})`);

// Counting starts before any of src/ runs: V8 counts blocks only of code compiled meanwhile.
const coverage = await startCoverage();
let failed = false;
let kept = 0;
const keepRpc = (input: RpcInput) => {
  const json = input.encoding === "json";
  const body = json ? new TextDecoder().decode(input.body) : input.body;
  if (keep(`rpc/${input.method.name}`, body, json ? "json" : "bin")) kept++;
};
const chunk = 100_000;
for (let done = 0, round = 0; done < Number(values.inputs); done += chunk, round++) {
  const report = await fuzzRpc({
    inputs: Math.min(chunk, Number(values.inputs) - done),
    seed: seed + round * 1_000_003,
    corpus: readRpcCorpus(),
    onNewOutcome: keepRpc,
    coverage,
    onNewCoverage: keepRpc,
  });
  console.log(
    `rpc: ${report.inputs} inputs in ${report.seconds.toFixed(1)} s (gRPC listener ${report.byListener.grpc}, HTTP listener ${report.byListener.http}), ${report.outcomes} distinct outcomes, ${report.newCoverage} inputs reached new blocks (${report.blocks} blocks of src/ so far)`,
  );
  const broken = [...report.failures, ...report.storeViolations];
  if (report.internalErrorsLogged > 0)
    broken.push(`${report.internalErrorsLogged} internal errors logged`);
  for (const f of broken) {
    failed = true;
    console.log(`  FAILED ${f}`);
    keep("failures", f, "txt");
  }
}

const targets = parserTargets();
for (const r of await fuzzParsers({
  runs: Number(values.runs),
  seed,
  corpus: readParserCorpus(targets.map((t) => t.name)),
  targets,
  onNewOutcome(target, input) {
    if (keep(target, input, "txt")) kept++;
  },
  coverage,
  onNewCoverage(target, input) {
    if (keep(target, input, "txt")) kept++;
  },
})) {
  console.log(
    `${r.name}: ${r.runs} inputs in ${r.seconds.toFixed(1)} s, ${r.newCoverage} reached new blocks (${r.blocks} blocks)${r.failure ? `: FAILED ${r.failure.error}` : ""}`,
  );
  if (r.failure !== undefined) {
    failed = true;
    keep("failures", `${r.name}\n${r.failure.error}\n${r.failure.input}`, "txt");
    keep(r.name, r.failure.input, "txt");
  }
}
console.log(`fuzz: ${kept} new corpus entries; ${failed ? "FAILED" : "no failure"}`);
process.exitCode = failed ? 1 : 0;
