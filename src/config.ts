// Config is parsed and validated once, here, into plain numbers with the
// documented defaults (config-defaults.ts). An invalid value throws a
// ConfigError naming the option. Providers: config-provider.ts; the small
// validators: config-values.ts.

import { parse as parseYaml } from "yaml";
import { parseSecurity, type SecurityConfig } from "./config-auth.ts";
import { type BootstrapToken, parseBootstrap } from "./config-bootstrap.ts";
import { configDefaults, type LogLevel } from "./config-defaults.ts";
import { type FlowTuningConfig, flowRootKeys, parseFlowTuning } from "./config-flows.ts";
import { type LimitsConfig, parseLimits } from "./config-limits.ts";
import { nameRe, type ProviderConfig, parseProvider } from "./config-provider.ts";
import {
  grpcLimitKeys,
  healthLimitKeys,
  httpLimitKeys,
  parseTransportLimits,
  type TransportLimitsConfig,
  transportRootKeys,
} from "./config-transport.ts";
import {
  ConfigError,
  duration,
  hostPort,
  int,
  known,
  mongoUri,
  obj,
  str,
  strList,
} from "./config-values.ts";

export type { AuditConfig, AuthConfig, SecurityConfig, TlsConfig } from "./config-auth.ts";
export type { BootstrapToken } from "./config-bootstrap.ts";
export { configDefaults, type LogLevel } from "./config-defaults.ts";
export type { CallerLimitsConfig, LimitsConfig } from "./config-limits.ts";
export type { AuthMethod, ProviderConfig } from "./config-provider.ts";
export type { TransportLimitsConfig } from "./config-transport.ts";
export { ConfigError, parseDuration } from "./config-values.ts";

export interface GrantConfig {
  readonly name: string;
  readonly provider: string;
  readonly scopes: readonly string[];
  readonly audience?: string | undefined;
}

export type StoreConfig =
  | { readonly kind: "memory" }
  /** `uri` may hold credentials: never log it. */
  | {
      readonly kind: "mongo";
      readonly uri: string;
      readonly dbName: string;
      /** The change log, where the server has no change streams (docs/STORAGE.md). */
      readonly changeLogMarginMs: number;
      readonly changeLogRetentionMs: number;
    }
  | { readonly kind: "file"; readonly dir: string };

export interface Config extends SecurityConfig {
  /** MONGODB_URI → mongo; else TOKENVEND_DATA_DIR → file; else memory. */
  readonly store: StoreConfig;
  /** TOKENVEND_ENCRYPTION_KEYS: comma-separated kid:base64 keys, the first one writes. */
  readonly encryptionKeys: string | undefined;
  /** TOKENVEND_ENCRYPTION_KEY_FILES: comma-separated paths; the file name is the key id. */
  readonly encryptionKeyFiles: readonly string[];
  /** How often cached keys are checked against a shared store (renewals and revocations elsewhere). */
  readonly syncIntervalMs: number;
  /** How long a refresh claim holds before another replica may take it over. */
  readonly claimLeaseMs: number;
  /** How often a replica waiting on another's claim looks for the new generation. */
  readonly claimPollMs: number;
  /** A cached key unused this long, with no stream or refresh, is dropped from memory. */
  readonly idleEvictMs: number;
  /** Background renewals of one key are at least this far apart (no hot loop on short tokens). */
  readonly minRefreshIntervalMs: number;
  /** A grant used within this long is renewed in the background, so its callers find it fresh. */
  readonly grantKeepFreshMs: number;
  /** How often old generations and dead claims are swept from the store. */
  readonly sweepIntervalMs: number;
  readonly grpcListen: string;
  readonly httpListen: string;
  /** metrics.prometheusListen / TOKENVEND_PROMETHEUS_LISTEN: a Prometheus scrape endpoint; off when unset. */
  readonly prometheusListen: string | undefined;
  /** health.listen / TOKENVEND_HEALTH_LISTEN: grpc.health.v1 alone, plaintext, for probes (off when unset). */
  readonly healthListen: string | undefined;
  readonly logLevel: LogLevel;
  readonly refreshTimeoutMs: number;
  readonly shutdownGraceMs: number;
  readonly maxStreams: number;
  /** Largest request message either listener accepts; larger ones get RESOURCE_EXHAUSTED. */
  readonly maxMessageBytes: number;
  readonly providers: ReadonlyMap<string, ProviderConfig>;
  readonly grants: ReadonlyMap<string, GrantConfig>;
  /** The flows' tunables (authorization state lifetime, unused-refresh pace, webhooks). */
  readonly flows: FlowTuningConfig;
  /** Tokens stored at start where their key has none (config-bootstrap.ts). Holds secrets. */
  readonly bootstrap: readonly BootstrapToken[];
  /** Shared store: how often a replica records itself and its keys (for reencrypt's check). */
  readonly replicaHeartbeatMs: number;
  /** Memory, provider and per-caller bounds (config-limits.ts). */
  readonly limits: LimitsConfig;
  /** The listeners' connection limits and the cap on a provider's response (config-transport.ts). */
  readonly transportLimits: TransportLimitsConfig;
}

const logLevels: readonly LogLevel[] = [
  "trace",
  "debug",
  "info",
  "warn",
  "error",
  "fatal",
  "silent",
];

export interface LoadConfigOptions {
  /** The environment (process.env in main). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Reads a file as UTF-8 (secrets and the YAML file). */
  readonly readFile: (path: string) => string;
  /** Config used when TOKENVEND_CONFIG is not set (the dev mode's embedded defaults). */
  readonly fallback?: unknown;
}

/** Loads TOKENVEND_CONFIG (or the fallback), applies env overrides and validates. */
export function loadConfig(opts: LoadConfigOptions): Config {
  const path = opts.env.TOKENVEND_CONFIG;
  let raw: unknown = opts.fallback ?? {};
  if (path !== undefined && path !== "") {
    let text: string;
    try {
      text = opts.readFile(path);
    } catch (err) {
      throw new ConfigError(`TOKENVEND_CONFIG: cannot read ${path}: ${(err as Error).message}`);
    }
    try {
      raw = parseYaml(text) ?? {};
    } catch (err) {
      throw new ConfigError(
        `TOKENVEND_CONFIG: ${path} is not valid YAML: ${(err as Error).message}`,
      );
    }
  }
  return parseConfig(raw, opts);
}

export function parseConfig(raw: unknown, opts: LoadConfigOptions): Config {
  const root = obj(raw, "config");
  known(root, "config", [
    "grpc",
    "http",
    "logLevel",
    "refreshTimeout",
    "shutdownGrace",
    "maxStreams",
    "maxMessageBytes",
    "syncInterval",
    "claimLease",
    "claimPoll",
    "idleEvict",
    "minRefreshInterval",
    "grantKeepFresh",
    "sweepInterval",
    "changeLogMargin",
    "changeLogRetention",
    "providers",
    "grants",
    "metrics",
    ...flowRootKeys,
    "bootstrap",
    "replicaHeartbeat",
    "auth",
    "policy",
    "tls",
    "audit",
    "health",
    "limits",
    ...transportRootKeys,
  ]);
  const env = opts.env;
  const grpc = obj(root.grpc ?? {}, "grpc");
  const http = obj(root.http ?? {}, "http");
  known(grpc, "grpc", ["listen", ...grpcLimitKeys]);
  known(http, "http", ["listen", "allowedHosts", "corsOrigins", ...httpLimitKeys]);
  const grpcListen = hostPort(
    env.TOKENVEND_GRPC_LISTEN ?? str(grpc.listen, "grpc.listen") ?? configDefaults.grpcListen,
    env.TOKENVEND_GRPC_LISTEN !== undefined ? "TOKENVEND_GRPC_LISTEN" : "grpc.listen",
  );
  const httpListen = hostPort(
    env.TOKENVEND_HTTP_LISTEN ?? str(http.listen, "http.listen") ?? configDefaults.httpListen,
    env.TOKENVEND_HTTP_LISTEN !== undefined ? "TOKENVEND_HTTP_LISTEN" : "http.listen",
  );
  const healthRoot = obj(root.health ?? {}, "health");
  known(healthRoot, "health", ["listen", ...healthLimitKeys]);
  const healthText = env.TOKENVEND_HEALTH_LISTEN || str(healthRoot.listen, "health.listen");
  const healthListen =
    healthText === undefined || healthText === ""
      ? undefined
      : hostPort(
          healthText,
          env.TOKENVEND_HEALTH_LISTEN ? "TOKENVEND_HEALTH_LISTEN" : "health.listen",
        );
  const metricsRoot = obj(root.metrics ?? {}, "metrics");
  known(metricsRoot, "metrics", ["prometheusListen"]);
  const promListen =
    env.TOKENVEND_PROMETHEUS_LISTEN ||
    str(metricsRoot.prometheusListen, "metrics.prometheusListen");
  const prometheusListen =
    promListen === undefined || promListen === ""
      ? undefined
      : hostPort(
          promListen,
          env.TOKENVEND_PROMETHEUS_LISTEN
            ? "TOKENVEND_PROMETHEUS_LISTEN"
            : "metrics.prometheusListen",
        );
  const levelName = env.TOKENVEND_LOG_LEVEL !== undefined ? "TOKENVEND_LOG_LEVEL" : "logLevel";
  const level =
    env.TOKENVEND_LOG_LEVEL ?? str(root.logLevel, "logLevel") ?? configDefaults.logLevel;
  if (!logLevels.includes(level as LogLevel)) {
    throw new ConfigError(`${levelName} must be one of ${logLevels.join(", ")}; got "${level}"`);
  }

  const limits = parseLimits(root);
  const providers = new Map<string, ProviderConfig>();
  for (const [name, value] of Object.entries(obj(root.providers ?? {}, "providers"))) {
    providers.set(name, parseProvider(name, value, { ...opts, providerLimits: limits.providers }));
  }
  const grants = new Map<string, GrantConfig>();
  for (const [name, value] of Object.entries(obj(root.grants ?? {}, "grants"))) {
    const at = `grants.${name}`;
    if (!nameRe.test(name)) throw new ConfigError(`${at}: a grant name must match ${nameRe}`);
    const g = obj(value, at);
    known(g, at, ["provider", "scopes", "audience"]);
    const provider = str(g.provider, `${at}.provider`);
    if (provider === undefined || !providers.has(provider)) {
      throw new ConfigError(
        `${at}.provider must name a configured provider; got "${provider ?? ""}"`,
      );
    }
    grants.set(name, {
      name,
      provider,
      scopes: strList(g.scopes, `${at}.scopes`),
      audience: str(g.audience, `${at}.audience`),
    });
  }

  const syncIntervalMs = duration(root.syncInterval, "syncInterval", configDefaults.syncIntervalMs);
  const refreshTimeoutMs = duration(
    root.refreshTimeout,
    "refreshTimeout",
    configDefaults.refreshTimeoutMs,
  );
  const claimLeaseMs = duration(root.claimLease, "claimLease", configDefaults.claimLeaseMs);
  const claimMinMs = refreshTimeoutMs + configDefaults.claimMarginMs;
  if (claimLeaseMs < claimMinMs) {
    // A holder still within its refresh, or recording the provider's answer in its claim, must
    // not look dead: another replica would redeem the same refresh token.
    throw new ConfigError(
      `claimLease (${claimLeaseMs} ms) must be at least refreshTimeout + ${configDefaults.claimMarginMs} ms (${claimMinMs} ms): ` +
        "a replica still refreshing must never look dead to the others",
    );
  }
  if (limits.store.tombstoneRetentionMs < claimLeaseMs + refreshTimeoutMs) {
    // A refresh still running when its key's revocation is swept would store it again.
    throw new ConfigError(
      `limits.store.tombstoneRetention (${limits.store.tombstoneRetentionMs} ms) must be at least claimLease + refreshTimeout (${claimLeaseMs + refreshTimeoutMs} ms)`,
    );
  }
  const changeLogMarginMs = duration(
    root.changeLogMargin,
    "changeLogMargin",
    configDefaults.changeLogMarginMs,
  );
  const changeLogRetentionMs = duration(
    root.changeLogRetention,
    "changeLogRetention",
    configDefaults.changeLogRetentionMs,
  );
  if (changeLogMarginMs <= 0) throw new ConfigError("changeLogMargin must be more than 0");
  // A replica that reads the log less often than the records stay re-checks every cached key at
  // each read: correct, but what the log is there to avoid (docs/STORAGE.md).
  if (changeLogRetentionMs < 4 * changeLogMarginMs) {
    throw new ConfigError(
      `changeLogRetention (${changeLogRetentionMs} ms) must be at least 4 × changeLogMargin (${4 * changeLogMarginMs} ms)`,
    );
  }
  const store: StoreConfig = env.MONGODB_URI
    ? {
        kind: "mongo",
        uri: mongoUri(env.MONGODB_URI),
        dbName: env.TOKENVEND_MONGODB_DB || configDefaults.mongoDbName,
        changeLogMarginMs,
        changeLogRetentionMs,
      }
    : env.TOKENVEND_DATA_DIR
      ? { kind: "file", dir: env.TOKENVEND_DATA_DIR }
      : { kind: "memory" };
  return {
    ...parseSecurity(root, http, opts),
    store,
    encryptionKeys: env.TOKENVEND_ENCRYPTION_KEYS || undefined,
    encryptionKeyFiles: (env.TOKENVEND_ENCRYPTION_KEY_FILES ?? "").split(",").filter(Boolean),
    syncIntervalMs,
    claimLeaseMs,
    claimPollMs: duration(root.claimPoll, "claimPoll", configDefaults.claimPollMs),
    idleEvictMs: duration(root.idleEvict, "idleEvict", configDefaults.idleEvictMs),
    minRefreshIntervalMs: duration(
      root.minRefreshInterval,
      "minRefreshInterval",
      configDefaults.minRefreshIntervalMs,
    ),
    grantKeepFreshMs: duration(
      root.grantKeepFresh,
      "grantKeepFresh",
      configDefaults.grantKeepFreshMs,
    ),
    sweepIntervalMs: duration(root.sweepInterval, "sweepInterval", configDefaults.sweepIntervalMs),
    grpcListen,
    httpListen,
    prometheusListen,
    healthListen,
    logLevel: level as LogLevel,
    refreshTimeoutMs,
    shutdownGraceMs: duration(root.shutdownGrace, "shutdownGrace", configDefaults.shutdownGraceMs),
    maxStreams: int(root.maxStreams, "maxStreams", configDefaults.maxStreams, 1, 1_000_000),
    maxMessageBytes: int(
      root.maxMessageBytes,
      "maxMessageBytes",
      configDefaults.maxMessageBytes,
      1024,
      16 * 1024 * 1024,
    ),
    providers,
    grants,
    flows: parseFlowTuning(root),
    bootstrap: parseBootstrap({
      env,
      readFile: opts.readFile,
      section: root.bootstrap,
      providers: new Set(providers.keys()),
      grants: new Set(grants.keys()),
    }),
    replicaHeartbeatMs: duration(
      root.replicaHeartbeat,
      "replicaHeartbeat",
      configDefaults.replicaHeartbeatMs,
    ),
    limits,
    transportLimits: parseTransportLimits({ root, grpc, http, health: healthRoot }),
  };
}
