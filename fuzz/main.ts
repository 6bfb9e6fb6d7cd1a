// `npm run fuzz`: the long run. The RPC target (every RPC, every protocol, both listeners) and
// every parser target, with the corpus in fuzz/corpus/ mutated alongside generated inputs. An
// input that reaches a new outcome is kept in the corpus (commit it: CI then starts from it);
// one that breaks a rule is written to fuzz/corpus/failures/ and the run exits 1.
//
//   npm run fuzz                              1,000,000 RPC inputs, 200,000 per parser
//   npm run fuzz -- --inputs 200000 --runs 20000 --seed 42
//
// CI runs the same targets on a fixed budget: test/fuzz.test.ts.

import { parseArgs } from "node:util";
import { keep, readParserCorpus, readRpcCorpus } from "./corpus.ts";
import { fuzzParsers, parserTargets } from "./parser-targets.ts";
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

let failed = false;
let kept = 0;
const chunk = 100_000;
for (let done = 0, round = 0; done < Number(values.inputs); done += chunk, round++) {
  const report = await fuzzRpc({
    inputs: Math.min(chunk, Number(values.inputs) - done),
    seed: seed + round * 1_000_003,
    corpus: readRpcCorpus(),
    onNewOutcome(input) {
      const json = input.encoding === "json";
      if (
        keep(
          `rpc/${input.method.name}`,
          json ? new TextDecoder().decode(input.body) : input.body,
          json ? "json" : "bin",
        )
      )
        kept++;
    },
  });
  console.log(
    `rpc: ${report.inputs} inputs in ${report.seconds.toFixed(1)} s (gRPC listener ${report.byListener.grpc}, HTTP listener ${report.byListener.http}), ${report.outcomes} distinct outcomes`,
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
})) {
  console.log(
    `${r.name}: ${r.runs} inputs in ${r.seconds.toFixed(1)} s${r.failure ? `: FAILED ${r.failure.error}` : ""}`,
  );
  if (r.failure !== undefined) {
    failed = true;
    keep("failures", `${r.name}\n${r.failure.error}\n${r.failure.input}`, "txt");
    keep(r.name, r.failure.input, "txt");
  }
}
console.log(`fuzz: ${kept} new corpus entries; ${failed ? "FAILED" : "no failure"}`);
process.exitCode = failed ? 1 : 0;
