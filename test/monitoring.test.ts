// The dashboard and the alerts (k8s/monitoring/) against what tokenvend really exports: the
// rules pass `promtool check rules` and their unit tests (`promtool test rules`); every query of
// the rules and the Grafana dashboard parses as PromQL and names only metrics and labels that
// src/telemetry/metrics.ts defines, named as a real replica's Prometheus endpoint names them; the
// dashboard shows every metric; every alert has its runbook in docs/OPERATIONS.md.

import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import test from "ava";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import {
  GetTokenRequestSchema,
  StoreUpstreamTokensRequestSchema,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { attr } from "../src/telemetry/metrics.ts";
import { getValid, startStack } from "./support/stack.ts";
import { toolPath } from "./support/tools.ts";

const run = promisify(execFile);
const repo = new URL("..", import.meta.url).pathname;
const monitoring = join(repo, "k8s/monitoring");
const read = (p: string) => readFile(join(repo, p), "utf8");

interface Rule {
  readonly alert?: string;
  readonly record?: string;
  readonly expr: string;
  readonly annotations?: Record<string, string>;
}
const rules = async () =>
  (
    parseYaml(await read("k8s/monitoring/tokenvend.rules.yaml")) as { groups: { rules: Rule[] }[] }
  ).groups.flatMap((g) => g.rules);

interface Panel {
  readonly type: string;
  readonly title: string;
  readonly targets?: { expr: string; legendFormat?: string }[];
}
const dashboard = async () =>
  JSON.parse(await read("k8s/monitoring/grafana-dashboard.json")) as {
    panels: Panel[];
    templating: { list: { name: string; query: string | { query: string } }[] };
  };

/** Dashboard queries with Grafana's variables given values, so promtool can parse them. */
const concrete = (expr: string) =>
  expr.replaceAll("$__rate_interval", "5m").replaceAll("$job", ".*").replaceAll("$instance", ".*");

/** The Prometheus names of every metric metrics.ts defines, by instrument kind. */
async function definedMetrics(): Promise<Set<string>> {
  const text = await read("src/telemetry/metrics.ts");
  const names = new Set<string>();
  for (const m of text.matchAll(/create(\w+)\(\s*"([a-z._]+)"/g)) {
    const [, kind, dotted] = m as unknown as [string, string, string];
    const base = dotted.replaceAll(".", "_");
    if (kind === "Histogram") for (const s of ["_bucket", "_count", "_sum"]) names.add(base + s);
    else if (kind === "Counter" || kind === "ObservableCounter") names.add(`${base}_total`);
    else names.add(base);
  }
  return names;
}

const knownLabels = new Set([
  ...Object.values(attr).map((a) => a.replaceAll(".", "_")),
  "rpc_method",
  "rpc_status_code",
  "rpc_system_name",
  "error_type",
  "le",
  "job",
  "instance",
]);

/** Metric names (tokenvend's and the RPC histogram's) and label names a query uses. */
function namesIn(expr: string): { metrics: string[]; labels: string[] } {
  const metrics = [...expr.matchAll(/\b(?:tokenvend|rpc_server)_[a-z_]+\b/g)]
    .map((m) => m[0])
    .filter((n) => !knownLabels.has(n));
  const labels = [
    ...[...expr.matchAll(/\b(?:by|on)\s*\(([^)]*)\)/g)].flatMap((m) => (m[1] ?? "").split(",")),
    ...[...expr.matchAll(/\{([^}]*)\}/g)].flatMap((m) =>
      [...(m[1] ?? "").matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map((l) => l[1] ?? ""),
    ),
  ]
    .map((l) => l.trim())
    .filter(Boolean);
  return { metrics, labels };
}

test("promtool check rules: the rule file is valid", async (t) => {
  const { stdout } = await run(toolPath("promtool"), ["check", "rules", "tokenvend.rules.yaml"], {
    cwd: monitoring,
  });
  t.regex(stdout, /SUCCESS: \d+ rules found/);
});

test("promtool test rules: each alert fires on what should raise it, and only on that", async (t) => {
  const { stdout } = await run(
    toolPath("promtool"),
    ["test", "rules", "tokenvend.rules.test.yaml"],
    {
      cwd: monitoring,
    },
  );
  t.regex(stdout, /SUCCESS/);
  const tests = parseYaml(await read("k8s/monitoring/tokenvend.rules.test.yaml")) as {
    tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
  };
  const cases = tests.tests.flatMap((c) => c.alert_rule_test ?? []);
  const alerts = (await rules()).flatMap((r) => (r.alert ? [r.alert] : []));
  t.true(alerts.length >= 7);
  for (const a of alerts) {
    t.true(
      cases.some((c) => c.alertname === a && c.exp_alerts.length > 0),
      `${a} has a test in which it fires`,
    );
  }
});

test("a bad rule fails promtool: the checks can fail", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "tokenvend-rules-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(
    join(dir, "bad.yaml"),
    toYaml({ groups: [{ name: "x", rules: [{ alert: "X", expr: "sum by (a (b)" }] }] }),
  );
  const err = await t.throwsAsync(
    run(toolPath("promtool"), ["check", "rules", "bad.yaml"], { cwd: dir }),
  );
  t.regex(
    String((err as { stdout?: string }).stdout) + String((err as { stderr?: string }).stderr),
    /FAILED/,
  );
});

test("every query of the rules and the dashboard parses, on metrics and labels tokenvend exports", async (t) => {
  const defined = await definedMetrics();
  // The names a real replica's Prometheus endpoint gives are the ones derived from metrics.ts.
  const s = await startStack({ config: { metrics: { prometheusListen: "127.0.0.1:0" } } });
  t.teardown(s.stop);
  await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" }));
  await s.client.storeUpstreamTokens(
    create(StoreUpstreamTokensRequestSchema, {
      sessionId: "m",
      provider: "idp",
      accessToken: "at",
      expiry: { case: "expiresIn", value: 300n },
    }),
  );
  await s.client.getValidTokens(getValid("m"));
  await s.client.getValidTokens(getValid("m"));
  const scrape = await (await fetch(`http://127.0.0.1:${s.server.prometheusPort}/metrics`)).text();
  const scraped = new Set(
    scrape
      .split("\n")
      .filter((l) => l !== "" && !l.startsWith("#"))
      .map((l) => l.split(/[{ ]/)[0] as string)
      .filter((n) => n !== "target_info"),
  );
  t.true(scraped.size >= 8, [...scraped].join(" "));
  for (const n of scraped)
    t.true(defined.has(n), `${n} is scraped but not derived from metrics.ts`);
  const scrapedLabels = new Set([...scrape.matchAll(/[{,](\w+)="/g)].map((m) => m[1] ?? ""));
  for (const l of scrapedLabels) {
    if (l !== "otel_scope_name" && !l.startsWith("telemetry_sdk") && l !== "service_name") {
      t.true(knownLabels.has(l), `label ${l} is scraped but not known here`);
    }
  }

  const d = await dashboard();
  const queries = [
    ...(await rules()).map((r) => ({ where: r.alert ?? r.record ?? "?", expr: r.expr })),
    ...d.panels.flatMap((p) =>
      (p.targets ?? []).map((q) => ({ where: `panel "${p.title}"`, expr: concrete(q.expr) })),
    ),
    ...d.templating.list.flatMap((v) =>
      typeof v.query === "object"
        ? [
            {
              where: `variable ${v.name}`,
              expr: concrete(v.query.query.replace(/^label_values\((.*), \w+\)$/, "$1")),
            },
          ]
        : [],
    ),
  ];
  t.true(queries.length > 20);
  const recorded = new Set((await rules()).flatMap((r) => (r.record ? [r.record] : [])));
  for (const q of queries) {
    const { metrics, labels } = namesIn(q.expr);
    const uses = [...q.expr.matchAll(/\btokenvend:[a-z_:0-9]+/g)].map((m) => m[0]);
    for (const u of uses) t.true(recorded.has(u), `${q.where}: no recording rule ${u}`);
    t.true(metrics.length + uses.length > 0, `${q.where} queries a tokenvend metric`);
    for (const m of metrics) t.true(defined.has(m), `${q.where}: no metric ${m}`);
    for (const l of labels) t.true(knownLabels.has(l), `${q.where}: no label ${l}`);
  }
  // Every query as a recording rule: promtool parses each one.
  const dir = await mkdtemp(join(tmpdir(), "tokenvend-queries-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const asRules = queries.map((q, i) => ({ record: `query:${i}`, expr: q.expr }));
  await writeFile(
    join(dir, "queries.yaml"),
    toYaml({ groups: [{ name: "queries", rules: asRules }] }),
  );
  const { stdout } = await run(toolPath("promtool"), ["check", "rules", "queries.yaml"], {
    cwd: dir,
  });
  t.regex(stdout, new RegExp(`SUCCESS: ${asRules.length} rules found`));
});

test("the dashboard shows every metric tokenvend exports; legends name only known labels", async (t) => {
  const d = await dashboard();
  const exprs = d.panels.flatMap((p) => (p.targets ?? []).map((q) => q.expr)).join("\n");
  for (const m of await definedMetrics()) {
    const base = m.replace(/_(bucket|count|sum)$/, "");
    t.true(exprs.includes(base), `the dashboard shows ${base}`);
  }
  for (const p of d.panels.filter((p) => p.type !== "row")) {
    t.true((p.targets ?? []).length > 0, p.title);
    for (const q of p.targets ?? []) {
      for (const m of (q.legendFormat ?? "").matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
        t.true(knownLabels.has(m[1] ?? ""), `${p.title}: legend label ${m[1]}`);
      }
    }
  }
});

test("every alert links to its runbook in docs/OPERATIONS.md", async (t) => {
  const doc = await read("docs/OPERATIONS.md");
  const anchors = new Set(
    [...doc.matchAll(/^#+ (.+)$/gm)].map((m) =>
      (m[1] ?? "")
        .toLowerCase()
        .replace(/[^a-z0-9 -]/g, "")
        .replaceAll(" ", "-"),
    ),
  );
  for (const r of (await rules()).filter((r) => r.alert)) {
    const link = r.annotations?.runbook ?? "";
    t.regex(link, /^docs\/OPERATIONS\.md#/, r.alert);
    t.true(anchors.has(link.split("#")[1] ?? ""), `${r.alert}: ${link} has a heading`);
  }
});
