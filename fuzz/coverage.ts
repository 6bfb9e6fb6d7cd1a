// Coverage feedback for the fuzz targets: V8's block coverage of tokenvend's own code (src/),
// read through the inspector of this very process (the RPC target's replica runs in it too).
// An input that runs a block of src/ that no earlier input ran joins the pool the next inputs
// are mutated from, and the corpus: the fuzzing is coverage-guided, as libFuzzer's is, at the
// grain of V8's blocks (branches taken, not edges). Jazzer.js would do it with libFuzzer, but its
// only Linux x64 addon needs glibc 2.38 and GLIBCXX_3.4.32, newer than this Debian 12 machine's
// 2.36 and 3.4.30, and it ships no sources to build.
//
// Precise coverage keeps V8 from running optimized code, so a target is slower while it is on:
// start it for the guided runs, stop it after.

import { Session } from "node:inspector/promises";

const own = new URL("../src/", import.meta.url).href;

interface Range {
  readonly start: number;
  readonly end: number;
  readonly count?: number;
}

/** The narrowest of `ranges` that holds `r` (itself included). */
function innermost<T extends Range>(ranges: readonly T[], r: Range): T | undefined {
  let best: T | undefined;
  for (const x of ranges) {
    if (
      x.start <= r.start &&
      r.end <= x.end &&
      (best === undefined || x.end - x.start < best.end - best.start)
    ) {
      best = x;
    }
  }
  return best;
}

export interface Coverage {
  /**
   * The blocks of src/ that ran since the last reading (or the start) and never before; from
   * now on they count as seen. Every reading resets V8's counts.
   */
  fresh(): Promise<ReadonlySet<string>>;
  /** Those of `blocks` that ran since the last reading (they are not recorded as seen). */
  ran(blocks: ReadonlySet<string>): Promise<Set<string>>;
  /** Blocks of src/ seen to run since the start. */
  readonly blocks: number;
  stop(): Promise<void>;
}

/**
 * Finds which inputs of a batch ran the batch's new blocks: the batch runs at full speed with
 * one reading after it, and only a batch that ran something new is run again an input at a time
 * (new blocks are rare once a run is warm). `run` must repeat what an input does; the inputs
 * that ran some of the new blocks go to `found`, in order, until none is left unexplained.
 */
export async function attribute<T>(
  coverage: Coverage,
  batch: readonly T[],
  run: (input: T) => Promise<unknown>,
  found: (input: T) => void,
): Promise<void> {
  const left = new Set(await coverage.fresh());
  for (const input of batch) {
    if (left.size === 0) return;
    await run(input).catch(() => undefined);
    const ran = await coverage.ran(left);
    if (ran.size === 0) continue;
    for (const b of ran) left.delete(b);
    found(input);
  }
}

/** Starts counting; code that ran before is not seen. Only one at a time per process. */
export async function startCoverage(): Promise<Coverage> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });
  // What ran before the start is not this run's.
  await session.post("Profiler.takePreciseCoverage");
  const seen = new Set<string>();
  // V8 lists a function's nested ranges only where their count differs from the range around
  // them: a branch shows up as a range of count 0 while it is not taken, and is left out while
  // it runs as often as what holds it. So every range ever listed is remembered, and a range ran
  // when the innermost range listed now that holds it has a count. A range listed for the first
  // time ran before exactly when what held it then did.
  const known = new Map<string, Range[]>();
  const key = (url: string, r: Range) => `${url}:${r.start}:${r.end}`;
  /** Every block of src/ that ran since the last reading. */
  const read = async () => {
    const { result } = await session.post("Profiler.takePreciseCoverage");
    const out: string[] = [];
    for (const script of result) {
      if (!script.url.startsWith(own)) continue;
      for (const f of script.functions) {
        const now = f.ranges.map((r) => ({
          start: r.startOffset,
          end: r.endOffset,
          count: r.count,
        }));
        const whole = now[0];
        if (whole === undefined || whole.count === 0) continue;
        const id = key(script.url, whole);
        const ranges = known.get(id) ?? [];
        known.set(id, ranges);
        for (const r of now) {
          if (ranges.some((k) => k.start === r.start && k.end === r.end)) continue;
          const held = innermost(ranges, r);
          if (held !== undefined && seen.has(key(script.url, held))) seen.add(key(script.url, r));
          ranges.push(r);
        }
        for (const k of ranges) {
          if ((innermost(now, k)?.count ?? 0) > 0) out.push(key(script.url, k));
        }
      }
    }
    return out;
  };
  return {
    async fresh() {
      const out = new Set<string>();
      for (const block of await read()) {
        if (seen.has(block)) continue;
        seen.add(block);
        out.add(block);
      }
      return out;
    },
    async ran(blocks) {
      const out = new Set<string>();
      for (const block of await read()) if (blocks.has(block)) out.add(block);
      return out;
    },
    get blocks() {
      return seen.size;
    },
    async stop() {
      await session.post("Profiler.stopPreciseCoverage");
      await session.post("Profiler.disable");
      session.disconnect();
    },
  };
}
