// The manifests against Kubernetes' own types (tools/k8scheck): the output of `kubectl kustomize`
// for k8s/ and k8s/monitoring/, built with the kustomize library kubectl embeds, decodes strictly
// into the k8s.io/api types, so a misspelled or misplaced field fails here instead of at
// `kubectl apply`. The image the Deployment runs is pinned by digest.

import { execFile } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import { parse as parseYaml } from "yaml";
import { k8sCheckPath } from "./support/tools.ts";

const run = promisify(execFile);
const repo = new URL("..", import.meta.url).pathname;

interface Report {
  objects: {
    apiVersion: string;
    kind: string;
    namespace?: string;
    name: string;
    images?: string[];
  }[];
  errors: string[];
}

async function check(...dirs: string[]): Promise<{ code: number; report: Report }> {
  const bin = await k8sCheckPath();
  try {
    const { stdout } = await run(bin, dirs, { cwd: repo });
    return { code: 0, report: JSON.parse(stdout) as Report };
  } catch (err) {
    const e = err as { code?: number; stdout?: string };
    return { code: e.code ?? -1, report: JSON.parse(e.stdout ?? "{}") as Report };
  }
}

/** A copy of k8s/ to break, removed after the test. */
async function copyOfK8s(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "tokenvend-k8s-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await cp(join(repo, "k8s"), dir, { recursive: true });
  return dir;
}

test("every object of k8s/ and k8s/monitoring/ decodes strictly into its Kubernetes type", async (t) => {
  const { code, report } = await check("k8s", "k8s/monitoring");
  t.deepEqual(report.errors, []);
  t.is(code, 0);
  const kustomization = parseYaml(await readFile(join(repo, "k8s/kustomization.yaml"), "utf8")) as {
    resources: string[];
  };
  const kinds = report.objects.map((o) => `${o.apiVersion} ${o.kind}`);
  // One object per resource file of k8s/, then the two monitoring ConfigMaps.
  t.is(report.objects.length, kustomization.resources.length + 2);
  for (const k of [
    "apps/v1 Deployment",
    "v1 Service",
    "policy/v1 PodDisruptionBudget",
    "autoscaling/v2 HorizontalPodAutoscaler",
    "networking.k8s.io/v1 NetworkPolicy",
    "v1 ConfigMap",
  ]) {
    t.true(kinds.includes(k), k);
  }
  t.deepEqual(
    report.objects
      .filter((o) => o.namespace === "monitoring")
      .map((o) => o.name)
      .sort(),
    ["tokenvend-grafana-dashboard", "tokenvend-prometheus-rules"],
  );
});

test("the image the Deployment runs is pinned by digest", async (t) => {
  const { report } = await check("k8s");
  const images = report.objects.flatMap((o) => o.images ?? []);
  t.true(images.length > 0);
  for (const image of images) t.regex(image, /^[^@:]+(:[^@]+)?@sha256:[0-9a-f]{64}$/, image);
});

test("a misspelled field, a misplaced one, a bad quantity or an unknown kind fails, named", async (t) => {
  const dir = await copyOfK8s(t);
  const deployment = join(dir, "deployment.yaml");
  const original = await readFile(deployment, "utf8");
  const broken = async (from: string, to: string, message: RegExp) => {
    t.true(original.includes(from), from);
    await writeFile(deployment, original.replace(from, to));
    const { code, report } = await check(dir);
    t.is(code, 1, to);
    t.is(report.errors.length, 1, to);
    t.regex(report.errors[0] ?? "", message);
  };
  await broken(
    "readinessProbe:",
    "readinesProbe:",
    /Deployment tokenvend\/tokenvend: .*unknown field "readinesProbe"/,
  );
  await broken(
    "      serviceAccountName: tokenvend",
    "      serviceAccount:\n        name: tokenvend",
    /unknown field|cannot unmarshal/,
  );
  await broken("memory: 256Mi", "memory: 256 megabytes", /quantities must match/);
  await broken(
    "kind: Deployment",
    "kind: Deploymnt",
    /no Kubernetes type for apps\/v1, Kind=Deploymnt/,
  );
});
