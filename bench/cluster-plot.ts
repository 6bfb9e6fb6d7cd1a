// The plot of `npm run bench:cluster`: the database's CPU (idle and under renewals) and the
// renewal visibility p99 against the keys each replica caches, as a PNG (Vega-Lite to SVG,
// resvg to PNG: both render headless, no browser or canvas). The target line is
// syncInterval + 250 ms (the bench runs syncInterval 1 s).

import { writeFileSync } from "node:fs";
import { Resvg } from "@resvg/resvg-js";
import * as vega from "vega";
import * as vl from "vega-lite";

export interface StepResult {
  keys: number;
  warmS: number;
  /** The median time of one lookup by key, the database alone. */
  lookupMs: number;
  failedRenewals: number;
  idle: { dbCpu: number; replicaCpu: number; commandsPerS: number; byName: Record<string, number> };
  load: { dbCpu: number; replicaCpu: number; commandsPerS: number; byName: Record<string, number> };
  visibility: { n: number; p50: number; p99: number; max: number };
  missing: number;
  store: { perS: number; errors: number; n: number; p50: number; p99: number; max: number };
  cold: { perS: number; errors: number; n: number; p50: number; p99: number; max: number };
  herd: { requests: number; invalidGrants?: number; distinctTokens: number };
}

export async function plotCluster(
  results: StepResult[],
  path: string,
  targetMs: number,
): Promise<void> {
  const cpu = results.flatMap((r) => [
    { keys: r.keys, series: "idle", value: r.idle.dbCpu },
    { keys: r.keys, series: "10 renewals/s", value: r.load.dbCpu },
  ]);
  const visibility = results.map((r) => ({ keys: r.keys, series: "p99", value: r.visibility.p99 }));
  const x = {
    field: "keys",
    type: "quantitative",
    scale: { type: "log" },
    axis: { values: results.map((r) => r.keys), format: "~s" },
    title: "cached keys per replica (3 replicas)",
  } as const;
  const line = (data: object[], title: string, legend: string) => ({
    data: { values: data },
    mark: { type: "line", point: true },
    encoding: {
      x,
      y: { field: "value", type: "quantitative", title },
      color: { field: "series", type: "nominal", title: legend },
    },
  });
  const spec = vl.compile({
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: "tokenvend: 3 replicas on FerretDB (PostgreSQL backend), npm run bench:cluster",
    hconcat: [
      { width: 380, height: 240, ...line(cpu, "database CPU (% of one core)", "database CPU") },
      {
        width: 380,
        height: 240,
        layer: [
          line(visibility, "renewal → visible on the other replicas (ms)", "visibility"),
          {
            data: { values: [{ target: targetMs }] },
            mark: { type: "rule", strokeDash: [6, 4], color: "gray" },
            encoding: { y: { field: "target", type: "quantitative" } },
          },
          {
            data: { values: [{ target: targetMs, label: `target ${targetMs} ms` }] },
            mark: { type: "text", align: "left", dx: 4, dy: -6, color: "gray" },
            encoding: {
              y: { field: "target", type: "quantitative" },
              x: { value: 0 },
              text: { field: "label" },
            },
          },
        ],
      },
    ],
    resolve: { scale: { color: "independent" } },
    config: { font: "DejaVu Sans" },
  } as unknown as vl.TopLevelSpec).spec;
  const view = new vega.View(vega.parse(spec), { renderer: "none" });
  const svg = await view.toSVG();
  const png = new Resvg(svg, {
    fitTo: { mode: "width", value: 1200 },
    background: "white",
    font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" },
  })
    .render()
    .asPng();
  writeFileSync(path, png);
}

// node bench/cluster-plot.ts RESULTS.json OUT.png: the plot again from a run's BENCH_JSON.
if (import.meta.main) {
  const [json, out] = process.argv.slice(2);
  if (json === undefined || out === undefined) {
    process.stderr.write("usage: node bench/cluster-plot.ts RESULTS.json OUT.png\n");
    process.exitCode = 2;
  } else {
    const { readFileSync } = await import("node:fs");
    await plotCluster(JSON.parse(readFileSync(json, "utf8")) as StepResult[], out, 1_250);
  }
}
