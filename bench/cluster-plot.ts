// The plot of `npm run bench:cluster`: the database's CPU (idle and under renewals) and the
// renewal visibility p99 against the keys each replica caches, as a PNG (Vega-Lite to SVG,
// resvg to PNG: both render headless, no browser or canvas).

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
  herd: { requests: number; distinctTokens: number };
}

export async function plotCluster(results: StepResult[], path: string): Promise<void> {
  const cpu = results.flatMap((r) => [
    { keys: r.keys, series: "database CPU, idle", value: r.idle.dbCpu },
    { keys: r.keys, series: "database CPU, 10 renewals/s", value: r.load.dbCpu },
  ]);
  const visibility = results.map((r) => ({
    keys: r.keys,
    series: "visibility p99",
    value: r.visibility.p99,
  }));
  const x = {
    field: "keys",
    type: "quantitative",
    scale: { type: "log" },
    title: "cached keys per replica (3 replicas)",
  } as const;
  const layer = (data: object[], title: string, domain?: [number, number]) => ({
    width: 420,
    height: 260,
    data: { values: data },
    mark: { type: "line", point: true },
    encoding: {
      x,
      y: {
        field: "value",
        type: "quantitative",
        title,
        ...(domain !== undefined ? { scale: { domain } } : {}),
      },
      color: { field: "series", type: "nominal", title: null },
    },
  });
  const spec = vl.compile({
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: "tokenvend cluster on FerretDB (PostgreSQL): cost follows changes, not keys",
    hconcat: [
      layer(cpu, "database CPU (% of one core)"),
      {
        ...layer(visibility, "renewal visible on other replicas, p99 (ms)"),
        layer: undefined,
      },
    ],
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
