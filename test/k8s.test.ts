// The deployment files (k8s/, Dockerfile, .dockerignore) hold what DESIGN.md's
// "Deployment" asks for and agree with the code: the ConfigMap passes
// src/config.ts's own validation with the env the image and the Deployment set,
// and ports, probes, the start command and the image's files follow from that
// config and package.json. Nothing here is built or applied to a cluster.

import { readdirSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, normalize } from "node:path";
import test from "ava";
import { parse as parseYaml } from "yaml";
import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import { type Config, parseConfig } from "../src/config.ts";
import { startRefusal } from "../src/refusals.ts";
import { parseHostPort } from "../src/transport/index.ts";
import { npmStartArgv } from "./support/server-process.ts";

const repo = new URL("..", import.meta.url).pathname;
const read = (p: string) => readFileSync(join(repo, p), "utf8");

// --- the manifests, typed only as far as the checks read them ---

interface Labels {
  readonly [k: string]: string;
}
interface Meta {
  readonly name: string;
  readonly namespace?: string;
  readonly labels?: Labels;
}
interface Manifest {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: Meta;
  readonly file: string;
}
interface Probe {
  readonly grpc?: { readonly port: number | string; readonly service?: string };
  readonly periodSeconds?: number;
  readonly failureThreshold?: number;
}
interface EnvVar {
  readonly name: string;
  readonly value?: string;
  readonly valueFrom?: { readonly secretKeyRef?: { readonly name: string; readonly key: string } };
}
interface Container {
  readonly name: string;
  readonly image: string;
  readonly command?: string[];
  readonly args?: string[];
  readonly env?: EnvVar[];
  readonly ports?: { name?: string; containerPort: number; protocol?: string }[];
  readonly startupProbe?: Probe;
  readonly readinessProbe?: Probe;
  readonly livenessProbe?: Probe;
  readonly lifecycle?: { preStop?: { sleep?: { seconds: number } } };
  readonly resources?: {
    requests?: { cpu?: string; memory?: string };
    limits?: { cpu?: string; memory?: string };
  };
  readonly securityContext?: Record<string, unknown>;
  readonly volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Volume {
  readonly name: string;
  readonly configMap?: { name: string; items?: { key: string; path: string }[] };
  readonly secret?: { secretName: string; items?: { key: string; path: string }[] };
  readonly projected?: {
    sources: {
      serviceAccountToken?: { audience?: string; path: string };
      configMap?: { name: string; items?: { key: string; path: string }[] };
    }[];
  };
}
interface LabelSelector {
  readonly matchLabels?: Labels;
  readonly matchExpressions?: unknown[];
}
interface Deployment extends Manifest {
  readonly spec: {
    replicas: number;
    selector: LabelSelector;
    template: {
      metadata: { labels: Labels };
      spec: {
        serviceAccountName?: string;
        automountServiceAccountToken?: boolean;
        terminationGracePeriodSeconds?: number;
        securityContext?: Record<string, unknown>;
        topologySpreadConstraints?: { topologyKey: string; labelSelector: LabelSelector }[];
        containers: Container[];
        volumes?: Volume[];
      };
    };
  };
}
interface ServicePort {
  readonly name?: string;
  readonly port: number;
  readonly targetPort?: number | string;
}
interface Service extends Manifest {
  readonly spec: {
    type?: string;
    clusterIP?: string;
    selector?: Labels;
    ports: ServicePort[];
  };
}
interface Peer {
  readonly podSelector?: LabelSelector;
  readonly namespaceSelector?: LabelSelector;
  readonly ipBlock?: { cidr: string };
}
interface PolicyRule {
  readonly from?: Peer[];
  readonly to?: Peer[];
  readonly ports?: { port: number | string; protocol?: string }[];
}
interface NetworkPolicy extends Manifest {
  readonly spec: {
    podSelector: LabelSelector;
    policyTypes: string[];
    ingress?: PolicyRule[];
    egress?: PolicyRule[];
  };
}

const kustomization = parseYaml(read("k8s/kustomization.yaml")) as {
  resources: string[];
  images?: { name: string; newName?: string; newTag?: string; digest?: string }[];
};
const manifests: Manifest[] = kustomization.resources.map((file) => ({
  ...(parseYaml(read(`k8s/${file}`)) as Omit<Manifest, "file">),
  file,
}));

function one<T extends Manifest>(kind: string, pick: (m: Manifest) => boolean = () => true): T {
  const found = manifests.filter((m) => m.kind === kind && pick(m));
  if (found.length !== 1) throw new Error(`expected one ${kind} in k8s/, found ${found.length}`);
  return found[0] as T;
}

const deployment = one<Deployment>("Deployment");
const pod = deployment.spec.template;
const podLabels = pod.metadata.labels;
const container = (() => {
  const c = pod.spec.containers.find((c) => c.name === "tokenvend");
  if (c === undefined) throw new Error("the Deployment has no container named tokenvend");
  return c;
})();
const configMap = one<Manifest & { data: Record<string, string> }>("ConfigMap");

/** Whether a label selector picks the pods (matchLabels only, which is all these manifests use). */
function selects(sel: LabelSelector | undefined, labels: Labels): boolean {
  if (sel === undefined || sel.matchExpressions !== undefined) return false;
  const entries = Object.entries(sel.matchLabels ?? {});
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

// --- the Dockerfile: its stages, continuation lines joined ---

interface Stage {
  from: string;
  instructions: { op: string; args: string }[];
}
const dockerStages: Stage[] = (() => {
  const lines = read("Dockerfile")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  const stages: Stage[] = [];
  for (const line of lines) {
    const [, op = "", args = ""] = /^(\S+)\s+(.*)$/.exec(line) ?? [];
    if (op.toUpperCase() === "FROM") stages.push({ from: args, instructions: [] });
    else stages.at(-1)?.instructions.push({ op: op.toUpperCase(), args });
  }
  return stages;
})();
const runtimeStage = dockerStages.at(-1) as Stage;
const dockerArgs = (stage: Stage, op: string) =>
  stage.instructions.filter((i) => i.op === op).map((i) => i.args);

/** The final stage's ENV, in either form (`K=V K2=V2` or `K V`). */
const imageEnv: Record<string, string> = {};
for (const args of dockerArgs(runtimeStage, "ENV")) {
  const pairs = args.includes("=")
    ? [...args.matchAll(/(\w+)=("[^"]*"|\S+)/g)].map((m) => [m[1], m[2]])
    : [args.split(/\s+(.*)/)];
  for (const [k, v] of pairs) {
    if (k !== undefined && v !== undefined) imageEnv[k] = v.replace(/^"|"$/g, "");
  }
}

// --- the service's config as a pod would load it ---

const configPath = container.env?.find((e) => e.name === "TOKENVEND_CONFIG")?.value;

/** Files the pod has from Secret volumes: mount path + item path. */
const secretFiles = new Set(
  (pod.spec.volumes ?? []).flatMap((v) => {
    const mount = container.volumeMounts?.find((m) => m.name === v.name);
    if (v.secret === undefined || mount === undefined) return [];
    return (v.secret.items ?? []).map((i) => join(mount.mountPath, i.path));
  }),
);

/** Files the pod has from projected volumes: its own token and ConfigMap items (the cluster's CA). */
const projectedFiles = new Map(
  (pod.spec.volumes ?? []).flatMap((v) => {
    const mount = container.volumeMounts?.find((m) => m.name === v.name);
    if (v.projected === undefined || mount === undefined) return [];
    return v.projected.sources.flatMap((s) => [
      ...(s.serviceAccountToken !== undefined
        ? [[join(mount.mountPath, s.serviceAccountToken.path), "token"] as const]
        : []),
      ...(s.configMap?.items ?? []).map(
        (i) => [join(mount.mountPath, i.path), `configMap ${s.configMap?.name}`] as const,
      ),
    ]);
  }),
);

/** The env of the container: the image's, then the Deployment's; secret-backed values are dummies. */
function podEnv(): Record<string, string> {
  const env: Record<string, string> = { ...imageEnv };
  for (const e of container.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    if (e.value !== undefined) env[e.name] = e.value;
    else if (ref !== undefined && e.name === "MONGODB_URI") env[e.name] = "mongodb://mongo:27017";
    else if (ref !== undefined && e.name === "TOKENVEND_ENCRYPTION_KEYS")
      env[e.name] = `primary:${Buffer.alloc(32, 7).toString("base64")}`;
    else if (ref !== undefined && e.name === "TOKENVEND_AUDIT_HMAC_KEY")
      env[e.name] = Buffer.alloc(32, 8).toString("base64");
    else if (ref !== undefined) env[e.name] = "dummy";
  }
  return env;
}

/** The ConfigMap's keys as files in the pod, at the config volume's mount. */
function configMapFiles(): Map<string, string> {
  const files = new Map<string, string>();
  for (const v of pod.spec.volumes ?? []) {
    const mount = container.volumeMounts?.find((m) => m.name === v.name);
    if (v.configMap?.name !== configMap.metadata.name || mount === undefined) continue;
    const items =
      v.configMap.items ?? Object.keys(configMap.data).map((k) => ({ key: k, path: k }));
    for (const i of items) {
      const text = configMap.data[i.key];
      if (text !== undefined) files.set(join(mount.mountPath, i.path), text);
    }
  }
  return files;
}

function loadPodConfig(): Config {
  if (configPath === undefined) throw new Error("the Deployment sets no TOKENVEND_CONFIG");
  const text = configMapFiles().get(configPath);
  if (text === undefined) throw new Error(`${configPath} is not a file the ConfigMap mounts`);
  return parseConfig(parseYaml(text), {
    env: podEnv(),
    readFile: (p) => {
      if (projectedFiles.get(normalize(p)) === "configMap kube-root-ca.crt") {
        return "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
      }
      if (!secretFiles.has(normalize(p))) throw new Error(`${p} is not mounted from a Secret`);
      return "dummy-client-secret\n";
    },
  });
}

const config = loadPodConfig();
const grpcPort = parseHostPort(config.grpcListen).port;
const httpPort = parseHostPort(config.httpListen).port;
const metricsPort =
  config.prometheusListen !== undefined ? parseHostPort(config.prometheusListen).port : undefined;
const healthPort =
  config.healthListen !== undefined ? parseHostPort(config.healthListen).port : undefined;
const containerPort = (name: string) =>
  container.ports?.find((p) => p.name === name)?.containerPort;

const startArgv = npmStartArgv();

// ---------------------------------------------------------------------------------------------

test("kustomization lists every manifest in k8s/, each one object in namespace tokenvend", (t) => {
  const onDisk = readdirSync(join(repo, "k8s"))
    .filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml")
    .sort();
  t.deepEqual([...kustomization.resources].sort(), onDisk);
  for (const m of manifests) {
    t.truthy(m.apiVersion, m.file);
    t.truthy(m.metadata?.name, m.file);
    if (m.kind === "Namespace") t.is(m.metadata.name, "tokenvend", m.file);
    else t.is(m.metadata.namespace, "tokenvend", m.file);
  }
  t.deepEqual(
    kustomization.images?.map((i) => i.name),
    [container.image],
    "kustomization sets the container's image",
  );
});

test("the namespace enforces the restricted Pod Security Standard", (t) => {
  const ns = one("Namespace");
  t.is(ns.metadata.labels?.["pod-security.kubernetes.io/enforce"], "restricted");
});

test("the ConfigMap's config passes src/config.ts with the pod's env: MongoDB, secrets from files", (t) => {
  t.is(configPath, "/etc/tokenvend/config.yaml");
  t.deepEqual(config.store, {
    kind: "mongo",
    uri: "mongodb://mongo:27017",
    dbName: "tokenvend",
    changeLogMarginMs: 5_000,
    changeLogRetentionMs: 120_000,
  });
  t.truthy(config.encryptionKeys);
  t.true(config.providers.size > 0);
  for (const p of config.providers.values()) {
    // The only secret readFile hands out is one mounted from a Secret.
    t.is(p.clientSecret, "dummy-client-secret", p.name);
  }
  // No secret values in the manifests: Secrets are created beside them, not kept here.
  t.false(
    manifests.some((m) => m.kind === "Secret"),
    "no Secret objects in k8s/",
  );
  t.false(/mongodb(\+srv)?:\/\/|clientSecret:/.test(configMap.data["config.yaml"] ?? ""));
});

test("MONGODB_URI and TOKENVEND_ENCRYPTION_KEYS come from Secrets, never inline", (t) => {
  for (const name of ["MONGODB_URI", "TOKENVEND_ENCRYPTION_KEYS"]) {
    const e = container.env?.find((v) => v.name === name);
    t.truthy(e?.valueFrom?.secretKeyRef?.name, name);
    t.is(e?.value, undefined, name);
  }
  t.is(imageEnv.MONGODB_URI, undefined);
  t.is(imageEnv.TOKENVEND_ENCRYPTION_KEYS, undefined);
});

test("the listeners bind every interface: the 127.0.0.1 defaults are unreachable in a pod", (t) => {
  for (const listen of [
    config.grpcListen,
    config.httpListen,
    config.prometheusListen,
    config.healthListen,
  ]) {
    t.true(["0.0.0.0", "::"].includes(parseHostPort(listen ?? "").host), listen);
  }
});

test("the container's ports are the ports the config listens on", (t) => {
  t.is(containerPort("grpc"), grpcPort);
  t.is(containerPort("http"), httpPort);
  t.is(containerPort("metrics"), metricsPort);
  t.is(containerPort("health"), healthPort);
  t.is(container.ports?.length, 4);
});

test("probes are native gRPC health probes on the plaintext health port (they cannot speak TLS), for services the server registers", (t) => {
  // The server reports health for "" and for each service it mounts (src/transport/grpc-server.ts).
  const registered = ["", TokenService.typeName];
  for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"] as const) {
    const probe = container[kind];
    t.is(probe?.grpc?.port, config.tls !== undefined ? healthPort : grpcPort, kind);
    t.true(registered.includes(probe?.grpc?.service ?? ""), kind);
  }
  t.is(container.readinessProbe?.grpc?.service, TokenService.typeName);
  // The startup probe waits for MongoDB at least 30 s before liveness takes over.
  const s = container.startupProbe;
  t.true((s?.periodSeconds ?? 10) * (s?.failureThreshold ?? 3) >= 30);
});

test("the container runs `npm start`'s command, and so does the image's CMD", (t) => {
  t.deepEqual(startArgv.slice(0, 1), ["node"]);
  t.true(startArgv.includes("--max-semi-space-size=4"), "npm start keeps the young-generation cap");
  t.deepEqual([...(container.command ?? []), ...(container.args ?? [])], startArgv);
  const cmd = dockerArgs(runtimeStage, "CMD");
  t.is(cmd.length, 1);
  t.deepEqual(JSON.parse(cmd[0] ?? "null"), startArgv, "CMD in exec form: no shell");
  t.deepEqual(dockerArgs(runtimeStage, "ENTRYPOINT"), []);
});

test("the pod runs restricted: non-root, no privilege escalation, read-only root, no capabilities", (t) => {
  const psc = pod.spec.securityContext ?? {};
  const csc = container.securityContext ?? {};
  t.is(psc.runAsNonRoot, true);
  t.deepEqual(psc.seccompProfile, { type: "RuntimeDefault" });
  t.is(csc.allowPrivilegeEscalation, false);
  t.is(csc.readOnlyRootFilesystem, true);
  t.is(csc.runAsNonRoot, true);
  t.not(csc.privileged, true);
  t.deepEqual(csc.capabilities, { drop: ["ALL"] });
  t.deepEqual(csc.seccompProfile, { type: "RuntimeDefault" });
  const uid = (csc.runAsUser ?? psc.runAsUser) as number;
  t.true(Number.isInteger(uid) && uid > 0);
  // The image's USER is the same numeric user, so it runs non-root outside Kubernetes too.
  t.deepEqual(dockerArgs(runtimeStage, "USER"), [`${uid}:${csc.runAsGroup ?? psc.runAsGroup}`]);
});

test("no API token is automounted; the pod's projected token and the cluster's CA serve the key set fetch only", (t) => {
  const sa = one("ServiceAccount") as Manifest & { automountServiceAccountToken?: boolean };
  t.is(pod.spec.serviceAccountName, sa.metadata.name);
  t.is(sa.automountServiceAccountToken, false);
  t.is(pod.spec.automountServiceAccountToken, false);
  const issuer = config.auth.jwtIssuers[0];
  t.is(projectedFiles.get(issuer?.tokenFile ?? ""), "token");
  t.truthy(issuer?.caPem);
  t.is(issuer?.jwksUri, "https://kubernetes.default.svc/openid/v1/jwks");
});

test("SIGTERM's drain fits in the termination grace period", (t) => {
  const preStopMs = (container.lifecycle?.preStop?.sleep?.seconds ?? 0) * 1000;
  const graceMs = (pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
  // The drain: shutdownGrace, then ending calls, closing the store and the exporter.
  t.true(graceMs >= preStopMs + config.shutdownGraceMs + 5_000, `${graceMs} ms`);
});

/** Bytes of a Kubernetes memory quantity ("256Mi", "1Gi", "300M"). */
function bytes(q: string | undefined): number {
  const m = /^(\d+)(Ki|Mi|Gi|k|M|G)?$/.exec(q ?? "");
  if (m === null) return Number.NaN;
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ""] ?? 1;
  return Number(m[1]) * unit;
}

test("the memory request holds maxStreams streams (docs/BENCHMARKS.md: ~125 MB + ~11 KB each)", (t) => {
  const request = bytes(container.resources?.requests?.memory);
  const limit = bytes(container.resources?.limits?.memory);
  t.true(request >= 125e6 + config.maxStreams * 11e3, `request ${request}`);
  t.true(limit >= request, `limit ${limit}`);
  t.truthy(container.resources?.requests?.cpu, "the HPA's utilisation needs a CPU request");
});

test("replicas spread across nodes", (t) => {
  t.true(deployment.spec.replicas >= 3);
  t.true(selects(deployment.spec.selector, podLabels));
  const byNode = pod.spec.topologySpreadConstraints?.find(
    (c) => c.topologyKey === "kubernetes.io/hostname",
  );
  t.true(selects(byNode?.labelSelector, podLabels));
});

test("the PodDisruptionBudget and the HPA govern these pods", (t) => {
  const pdb = one<Manifest & { spec: { selector: LabelSelector; maxUnavailable?: number } }>(
    "PodDisruptionBudget",
  );
  t.true(selects(pdb.spec.selector, podLabels));
  t.is(pdb.spec.maxUnavailable, 1);
  const hpa = one<
    Manifest & {
      spec: {
        scaleTargetRef: { apiVersion: string; kind: string; name: string };
        minReplicas: number;
        maxReplicas: number;
        metrics: { type: string; resource?: { name: string } }[];
      };
    }
  >("HorizontalPodAutoscaler");
  t.is(hpa.apiVersion, "autoscaling/v2");
  t.deepEqual(hpa.spec.scaleTargetRef, {
    apiVersion: deployment.apiVersion,
    kind: "Deployment",
    name: deployment.metadata.name,
  });
  t.is(hpa.spec.minReplicas, deployment.spec.replicas);
  t.true(hpa.spec.maxReplicas > hpa.spec.minReplicas);
  t.true(hpa.spec.metrics.some((m) => m.type === "Resource" && m.resource?.name === "cpu"));
});

/** The container port a Service port sends to (targetPort by name or number; default: port). */
function targetOf(p: ServicePort): number | undefined {
  const target = p.targetPort ?? p.port;
  return typeof target === "number" ? target : containerPort(target);
}

test("a ClusterIP and a headless Service select the pods on the gRPC and HTTP ports, not metrics", (t) => {
  const services = manifests.filter((m): m is Service => m.kind === "Service");
  const clusterIp = services.filter(
    (s) => (s.spec.type ?? "ClusterIP") === "ClusterIP" && s.spec.clusterIP !== "None",
  );
  const headless = services.filter((s) => s.spec.clusterIP === "None");
  t.is(clusterIp.length, 1);
  t.is(headless.length, 1);
  for (const s of services) {
    t.true(selects({ matchLabels: s.spec.selector ?? {} }, podLabels), s.metadata.name);
    t.deepEqual(
      s.spec.ports.map(targetOf).sort(),
      [grpcPort, httpPort].sort(),
      `${s.metadata.name}: callers' ports only; metrics is scraped per pod`,
    );
  }
});

/** The one namespace a peer selects by name, or undefined ({} selects all). */
const namespaceOf = (p: Peer) =>
  Object.keys(p.namespaceSelector?.matchLabels ?? {}).length === 1
    ? p.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"]
    : undefined;

/** The namespaces of the service accounts the policy lets in. */
const callerNamespaces = new Set(
  config.policy.flatMap((r) =>
    r.callers.map(
      (c) => /^system:serviceaccount:([^:*]+):/.exec(c)?.[1] ?? `not a service account: ${c}`,
    ),
  ),
);

const covers = (rule: PolicyRule, port: number) =>
  (rule.ports ?? []).some(
    (p) =>
      (p.protocol ?? "TCP") === "TCP" &&
      (p.port === port || (typeof p.port === "string" && containerPort(p.port) === port)),
  );

test("the NetworkPolicy admits callers on gRPC and HTTP and the monitoring namespace on metrics", (t) => {
  const np = one<NetworkPolicy>("NetworkPolicy");
  t.true(selects(np.spec.podSelector, podLabels));
  t.deepEqual([...np.spec.policyTypes].sort(), ["Egress", "Ingress"]);
  const ingress = np.spec.ingress ?? [];
  // A rule without `from` (or without ports) would admit everyone (or every port).
  for (const r of ingress) {
    t.true((r.from ?? []).length > 0);
    t.true((r.ports ?? []).length > 0);
  }
  for (const port of [grpcPort, httpPort]) {
    const rules = ingress.filter((r) => covers(r, port));
    t.true(rules.length > 0, `port ${port}`);
    for (const r of rules) {
      t.true(
        r.from?.every((p) => selects(p.podSelector, { "tokenvend.io/client": "true" })),
        `port ${port}: only labelled clients`,
      );
      // Each peer names its namespace: none admits labelled pods of every namespace.
      t.deepEqual(
        r.from?.map((p) => namespaceOf(p)).sort(),
        [...callerNamespaces].sort(),
        `port ${port}: exactly the namespaces the policy's rules name`,
      );
    }
  }
  const metricsRules = ingress.filter((r) => covers(r, metricsPort ?? -1));
  t.is(metricsRules.length, 1);
  t.deepEqual(metricsRules[0]?.from, [
    { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } } },
  ]);
  // Every port open to anyone is one the service listens on.
  const open = new Set(ingress.flatMap((r) => (r.ports ?? []).map((p) => p.port)));
  t.deepEqual([...open].sort(), [grpcPort, httpPort, metricsPort].sort());
});

test("the NetworkPolicy lets the pods reach DNS, MongoDB, the IdPs and the API server over HTTPS, nothing else", (t) => {
  const egress = one<NetworkPolicy>("NetworkPolicy").spec.egress ?? [];
  const ports = egress.flatMap((r) => (r.ports ?? []).map((p) => `${p.port}/${p.protocol}`));
  t.deepEqual(ports.sort(), ["27017/TCP", "443/TCP", "53/TCP", "53/UDP", "6443/TCP"]);
  for (const r of egress) t.true((r.to ?? []).length > 0);
});

test("npm start accepts the shipped config: callers authenticate with service-account tokens of audience tokenvend, over TLS", (t) => {
  t.is(startRefusal(config), undefined);
  t.true(config.auth.enabled);
  t.deepEqual(
    config.auth.jwtIssuers.map((i) => [i.kind, i.audiences]),
    [["kubernetes", ["tokenvend"]]],
  );
  t.true(config.policy.length > 0);
  t.truthy(config.tls);
  for (const f of [config.tls?.certFile, config.tls?.keyFile]) {
    t.true(secretFiles.has(f ?? ""), `${f} is mounted from a Secret`);
  }
  t.deepEqual(
    config.audit?.target,
    { kind: "stdout" },
    "audit to stdout: the root filesystem is read-only",
  );
  t.false(config.allowedHosts.includes("*"));
  t.true(config.allowedHosts.includes("tokenvend.tokenvend.svc.cluster.local"));
});

test("the example client mounts a projected token of audience tokenvend, and the policy and the NetworkPolicy let it in", (t) => {
  const example = parseYaml(read("k8s/examples/client.yaml")) as Deployment;
  const spec = example.spec.template.spec;
  const projected = spec.volumes
    ?.flatMap((v) => v.projected?.sources ?? [])
    .find((s) => s.serviceAccountToken);
  t.is(projected?.serviceAccountToken?.audience, "tokenvend");
  const sa = `system:serviceaccount:${example.metadata.namespace}:${spec.serviceAccountName}`;
  t.true(
    config.policy.some((r) =>
      r.callers.some((c) => new RegExp(`^${c.replaceAll("*", ".*")}$`).test(sa)),
    ),
    sa,
  );
  t.true(callerNamespaces.has(example.metadata.namespace ?? ""));
  t.is(example.spec.template.metadata.labels["tokenvend.io/client"], "true");
});

// --- the image ---

test("the image is the Node that package.json pins, with production dependencies only", (t) => {
  const lock = JSON.parse(read("package-lock.json")) as {
    packages: Record<string, { version: string }>;
  };
  const node = lock.packages["node_modules/node"]?.version;
  t.truthy(node);
  for (const stage of dockerStages) {
    t.is(stage.from.split(/\s+/)[0], `node:${node}-bookworm-slim`);
  }
  t.true(dockerStages.length >= 2, "multi-stage: npm stays in the build stage's layers");
  const installs = dockerStages.flatMap((s) => dockerArgs(s, "RUN"));
  t.true(installs.some((r) => /\bnpm ci\b.*--omit=dev/.test(r)));
  t.false(
    installs.some((r) => /\bnpm (i|install)\b/.test(r)),
    "npm ci: the lockfile, exactly",
  );
});

test("the image's listeners, EXPOSE and user", (t) => {
  t.is(imageEnv.TOKENVEND_GRPC_LISTEN, `0.0.0.0:${grpcPort}`);
  t.is(imageEnv.TOKENVEND_HTTP_LISTEN, `0.0.0.0:${httpPort}`);
  const exposed = dockerArgs(runtimeStage, "EXPOSE").flatMap((a) => a.split(/\s+/).map(Number));
  t.deepEqual(exposed.sort(), [grpcPort, httpPort, metricsPort, healthPort].sort());
  const copies = dockerArgs(runtimeStage, "COPY").map((a) => a.replace(/^--\S+\s+/, ""));
  for (const path of ["package.json", "gen", "src"]) {
    t.true(
      copies.some((c) => c.split(/\s+/)[0] === path),
      `the runtime stage copies ${path}`,
    );
  }
});

/** Whether the build context keeps a path: .dockerignore's patterns, the last match wins. */
function inContext(path: string): boolean {
  const patterns = read(".dockerignore")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  let kept = true;
  for (const p of patterns) {
    const negate = p.startsWith("!");
    const glob = negate ? p.slice(1) : p;
    const re = new RegExp(
      `^${glob
        .replace(/[.+^${}()|[\]\\]/g, "\\$&")
        .replace(/\*\*\/?|\*|\?/g, (m) =>
          m === "?" ? "[^/]" : m === "*" ? "[^/]*" : ".*",
        )}(/.*)?$`,
    );
    if (re.test(path)) kept = negate;
  }
  return kept;
}

function filesUnder(dir: string): string[] {
  return readdirSync(join(repo, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(repo.length));
}

test("the image has what `npm start` loads, and that needs only production dependencies", (t) => {
  const pkg = JSON.parse(read("package.json")) as { dependencies: Record<string, string> };
  for (const f of ["package.json", "package-lock.json", "gen/tokenvend.binpb", "src/main.ts"]) {
    t.true(inContext(f), f);
  }
  t.false(inContext("test/k8s.test.ts"));
  t.false(inContext("src/config.test.ts"));
  t.false(inContext(".cache/x"));
  const shipped = [...filesUnder("src"), ...filesUnder("gen")].filter(inContext);
  const seen = new Set<string>();
  // From the start command's modules, follow every import: each one is in the image or a
  // production dependency. main.ts's dynamic import of src/dev (--dev only) is left out.
  const queue = startArgv.filter((a) => /\.ts$/.test(a)).map((a) => normalize(a));
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    t.true(shipped.includes(file), `${file} is in the image`);
    const text = read(file);
    for (const m of text.matchAll(/(?:\bfrom|\bimport\(|^import)\s*"([^"]+)"/gm)) {
      const spec = m[1] as string;
      if (spec.startsWith(".")) {
        const target = normalize(join(dirname(file), spec));
        if (file === "src/main.ts" && target.startsWith("src/dev/")) continue;
        queue.push(target);
      } else if (!spec.startsWith("node:") && !builtinModules.includes(spec)) {
        const name = spec.startsWith("@")
          ? spec.split("/").slice(0, 2).join("/")
          : spec.split("/")[0];
        t.truthy(
          pkg.dependencies[name ?? ""],
          `${file} imports ${spec}: not a production dependency`,
        );
      }
    }
  }
  t.true(seen.has("src/server.ts") && seen.has("gen/tokenvend/v1/token_service_pb.js"));
});
