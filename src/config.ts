// Config is parsed and validated once, here, into plain numbers with documented
// defaults. An invalid value throws a ConfigError naming the option.

import { parse as parseYaml } from "yaml";
import type { BackoffPolicy } from "./core/backoff.ts";
import type { LifetimePolicy } from "./core/lifetime.ts";
import type { UpstreamAuthMethod, UpstreamProviderConfig } from "./idp/upstream-client.ts";
import { type HostPort, parseHostPort } from "./transport/index.ts";

export type AuthMethod = UpstreamAuthMethod;
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/** A provider: what the upstream client needs to reach it, and the lifecycle policy for its tokens. */
export interface ProviderConfig extends UpstreamProviderConfig {
  readonly name: string;
  /** Scopes asked for on refresh; empty keeps the originally granted scopes. */
  readonly refreshScopes: readonly string[];
  /** Plain http:// endpoints are refused unless on loopback or this is set. */
  readonly allowInsecureHttp: boolean;
  readonly lifetime: LifetimePolicy;
  readonly backoff: BackoffPolicy;
}

export interface GrantConfig {
  readonly name: string;
  readonly provider: string;
  readonly scopes: readonly string[];
  readonly audience?: string | undefined;
}

export type StoreConfig =
  | { readonly kind: "memory" }
  /** `uri` may hold credentials: never log it. */
  | { readonly kind: "mongo"; readonly uri: string; readonly dbName: string }
  | { readonly kind: "file"; readonly dir: string };

export interface Config {
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
  readonly logLevel: LogLevel;
  readonly refreshTimeoutMs: number;
  readonly shutdownGraceMs: number;
  readonly maxStreams: number;
  /** Largest request message either listener accepts; larger ones get RESOURCE_EXHAUSTED. */
  readonly maxMessageBytes: number;
  readonly providers: ReadonlyMap<string, ProviderConfig>;
  readonly grants: ReadonlyMap<string, GrantConfig>;
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export const configDefaults = {
  grpcListen: "127.0.0.1:50051",
  httpListen: "127.0.0.1:8080",
  logLevel: "info" as LogLevel,
  refreshTimeoutMs: 30_000,
  shutdownGraceMs: 10_000,
  maxStreams: 10_000,
  // The largest valid request (StoreUpstreamTokens with three 16 KiB tokens and a
  // hundred scopes) is about 76 KB; anything much bigger is not a token request.
  maxMessageBytes: 128 * 1024,
  providerTimeoutMs: 10_000,
  syncIntervalMs: 1_000,
  claimLeaseMs: 30_000,
  claimPollMs: 50,
  idleEvictMs: 600_000,
  minRefreshIntervalMs: 5_000,
  grantKeepFreshMs: 600_000,
  sweepIntervalMs: 60_000,
  mongoDbName: "tokenvend",
  /** Per provider (providers.NAME.lifetime). */
  lifetime: {
    freshness: 0.75,
    refreshMarginMs: 60_000,
    clockSkewMs: 30_000,
    refreshJitter: 0.1,
    defaultLifetimeMs: 3_600_000,
  } satisfies LifetimePolicy as LifetimePolicy,
  /** Per provider (providers.NAME.backoff). */
  backoff: {
    initialMs: 1_000,
    multiplier: 2,
    maxMs: 60_000,
    jitter: 0.2,
    maxRetryAfterMs: 600_000,
  } satisfies BackoffPolicy as BackoffPolicy,
};

const logLevels: readonly LogLevel[] = [
  "trace",
  "debug",
  "info",
  "warn",
  "error",
  "fatal",
  "silent",
];
const nameRe = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

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
    "providers",
    "grants",
    "metrics",
  ]);
  const env = opts.env;
  const grpc = obj(root.grpc ?? {}, "grpc");
  const http = obj(root.http ?? {}, "http");
  const grpcListen = hostPort(
    env.TOKENVEND_GRPC_LISTEN ?? str(grpc.listen, "grpc.listen") ?? configDefaults.grpcListen,
    env.TOKENVEND_GRPC_LISTEN !== undefined ? "TOKENVEND_GRPC_LISTEN" : "grpc.listen",
  );
  const httpListen = hostPort(
    env.TOKENVEND_HTTP_LISTEN ?? str(http.listen, "http.listen") ?? configDefaults.httpListen,
    env.TOKENVEND_HTTP_LISTEN !== undefined ? "TOKENVEND_HTTP_LISTEN" : "http.listen",
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

  const providers = new Map<string, ProviderConfig>();
  for (const [name, value] of Object.entries(obj(root.providers ?? {}, "providers"))) {
    providers.set(name, parseProvider(name, value, opts));
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

  const store: StoreConfig = env.MONGODB_URI
    ? {
        kind: "mongo",
        uri: mongoUri(env.MONGODB_URI),
        dbName: env.TOKENVEND_MONGODB_DB || configDefaults.mongoDbName,
      }
    : env.TOKENVEND_DATA_DIR
      ? { kind: "file", dir: env.TOKENVEND_DATA_DIR }
      : { kind: "memory" };
  return {
    store,
    encryptionKeys: env.TOKENVEND_ENCRYPTION_KEYS || undefined,
    encryptionKeyFiles: (env.TOKENVEND_ENCRYPTION_KEY_FILES ?? "").split(",").filter(Boolean),
    syncIntervalMs: duration(root.syncInterval, "syncInterval", configDefaults.syncIntervalMs),
    claimLeaseMs: duration(root.claimLease, "claimLease", configDefaults.claimLeaseMs),
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
    logLevel: level as LogLevel,
    refreshTimeoutMs: duration(
      root.refreshTimeout,
      "refreshTimeout",
      configDefaults.refreshTimeoutMs,
    ),
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
  };
}

function parseProvider(name: string, value: unknown, opts: LoadConfigOptions): ProviderConfig {
  const at = `providers.${name}`;
  if (!nameRe.test(name)) throw new ConfigError(`${at}: a provider name must match ${nameRe}`);
  const p = obj(value, at);
  known(p, at, [
    "issuer",
    "tokenEndpoint",
    "revocationEndpoint",
    "clientId",
    "clientSecret",
    "clientSecretFile",
    "clientSecretEnv",
    "authMethod",
    "scopes",
    "timeout",
    "allowInsecureHttp",
    "lifetime",
    "backoff",
  ]);
  if (p.clientSecret !== undefined) {
    throw new ConfigError(
      `${at}.clientSecret: secrets are never inline; use ${at}.clientSecretFile or ${at}.clientSecretEnv`,
    );
  }
  const issuer = url(p.issuer, `${at}.issuer`);
  const tokenEndpoint = url(p.tokenEndpoint, `${at}.tokenEndpoint`);
  if (issuer === undefined && tokenEndpoint === undefined) {
    throw new ConfigError(`${at}: set issuer (for discovery) or tokenEndpoint`);
  }
  const clientId = str(p.clientId, `${at}.clientId`);
  if (clientId === undefined || clientId === "") {
    throw new ConfigError(`${at}.clientId is required`);
  }
  const authMethod = (str(p.authMethod, `${at}.authMethod`) ?? "client_secret_basic") as AuthMethod;
  if (!["client_secret_basic", "client_secret_post", "none"].includes(authMethod)) {
    throw new ConfigError(
      `${at}.authMethod must be client_secret_basic, client_secret_post or none; got "${authMethod}"`,
    );
  }
  const secretFile = str(p.clientSecretFile, `${at}.clientSecretFile`);
  const secretEnv = str(p.clientSecretEnv, `${at}.clientSecretEnv`);
  let clientSecret: string | undefined;
  if (secretFile !== undefined) {
    try {
      clientSecret = opts.readFile(secretFile).trim();
    } catch (err) {
      throw new ConfigError(
        `${at}.clientSecretFile: cannot read ${secretFile}: ${(err as NodeJS.ErrnoException).code ?? "error"}`,
      );
    }
  } else if (secretEnv !== undefined) {
    clientSecret = opts.env[secretEnv];
    if (clientSecret === undefined || clientSecret === "") {
      throw new ConfigError(`${at}.clientSecretEnv: environment variable ${secretEnv} is not set`);
    }
  }
  if (authMethod !== "none" && clientSecret === undefined) {
    throw new ConfigError(
      `${at}: authMethod ${authMethod} needs a secret: set ${at}.clientSecretFile or ${at}.clientSecretEnv`,
    );
  }
  const lt = obj(p.lifetime ?? {}, `${at}.lifetime`);
  known(lt, `${at}.lifetime`, [
    "freshness",
    "refreshMargin",
    "clockSkew",
    "refreshJitter",
    "defaultLifetime",
  ]);
  const d = configDefaults.lifetime;
  const lifetime: LifetimePolicy = {
    freshness: fraction(lt.freshness, `${at}.lifetime.freshness`, d.freshness, false),
    refreshMarginMs: duration(lt.refreshMargin, `${at}.lifetime.refreshMargin`, d.refreshMarginMs),
    clockSkewMs: duration(lt.clockSkew, `${at}.lifetime.clockSkew`, d.clockSkewMs),
    refreshJitter: fraction(
      lt.refreshJitter,
      `${at}.lifetime.refreshJitter`,
      d.refreshJitter,
      true,
    ),
    defaultLifetimeMs: duration(
      lt.defaultLifetime,
      `${at}.lifetime.defaultLifetime`,
      d.defaultLifetimeMs,
    ),
  };
  const bo = obj(p.backoff ?? {}, `${at}.backoff`);
  known(bo, `${at}.backoff`, ["initial", "multiplier", "max", "jitter", "maxRetryAfter"]);
  const b = configDefaults.backoff;
  const backoff: BackoffPolicy = {
    initialMs: duration(bo.initial, `${at}.backoff.initial`, b.initialMs),
    multiplier: num(bo.multiplier, `${at}.backoff.multiplier`, b.multiplier, 1, 10),
    maxMs: duration(bo.max, `${at}.backoff.max`, b.maxMs),
    jitter: fraction(bo.jitter, `${at}.backoff.jitter`, b.jitter, true),
    maxRetryAfterMs: duration(bo.maxRetryAfter, `${at}.backoff.maxRetryAfter`, b.maxRetryAfterMs),
  };
  if (backoff.maxMs < backoff.initialMs) {
    throw new ConfigError(`${at}.backoff.max must be at least ${at}.backoff.initial`);
  }
  return {
    name,
    issuer,
    tokenEndpoint,
    revocationEndpoint: url(p.revocationEndpoint, `${at}.revocationEndpoint`),
    clientId,
    clientSecret,
    authMethod,
    refreshScopes: strList(p.scopes, `${at}.scopes`),
    timeoutMs: duration(p.timeout, `${at}.timeout`, configDefaults.providerTimeoutMs),
    allowInsecureHttp: bool(p.allowInsecureHttp, `${at}.allowInsecureHttp`, false),
    lifetime,
    backoff,
  };
}

// --- small validators; each names the option and says what it must be ---

function obj(v: unknown, at: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConfigError(`${at} must be a mapping`);
  }
  return v as Record<string, unknown>;
}

function known(o: Record<string, unknown>, at: string, keys: readonly string[]) {
  for (const k of Object.keys(o)) {
    if (!keys.includes(k)) {
      throw new ConfigError(`${at}.${k} is not an option; expected one of ${keys.join(", ")}`);
    }
  }
}

function str(v: unknown, at: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new ConfigError(`${at} must be a string`);
  return v;
}

function strList(v: unknown, at: string): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === "string") return v.split(/\s+/).filter(Boolean);
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string" && s !== "" && !/\s/.test(s))) {
    throw new ConfigError(`${at} must be a list of non-empty strings without spaces`);
  }
  return v as string[];
}

function bool(v: unknown, at: string, dflt: boolean): boolean {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "boolean") throw new ConfigError(`${at} must be true or false`);
  return v;
}

function num(v: unknown, at: string, dflt: number, min: number, max: number): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
    throw new ConfigError(`${at} must be a number from ${min} to ${max}; got ${JSON.stringify(v)}`);
  }
  return v;
}

function int(v: unknown, at: string, dflt: number, min: number, max: number): number {
  const n = num(v, at, dflt, min, max);
  if (!Number.isInteger(n)) throw new ConfigError(`${at} must be an integer; got ${n}`);
  return n;
}

function fraction(v: unknown, at: string, dflt: number, zeroOk: boolean): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "number" || !(zeroOk ? v >= 0 : v > 0) || v > 1) {
    throw new ConfigError(
      `${at} must be a number in ${zeroOk ? "[0, 1]" : "(0, 1]"}; got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses "250ms", "30s", "5m", "1h" (or combinations like "1m30s") into milliseconds. */
export function parseDuration(text: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * units[m[2] as string]!;
    matched += m[0].length;
  }
  return matched === text.length && text.length > 0 ? Math.round(total) : undefined;
}

function duration(v: unknown, at: string, dflt: number): number {
  if (v === undefined || v === null) return dflt;
  const ms = typeof v === "string" ? parseDuration(v) : undefined;
  if (ms === undefined) {
    throw new ConfigError(
      `${at} must be a duration such as "500ms", "30s", "5m" or "1h"; got ${JSON.stringify(v)}`,
    );
  }
  return ms;
}

function url(v: unknown, at: string): string | undefined {
  const s = str(v, at);
  if (s === undefined) return undefined;
  if (!URL.canParse(s) || !/^https?:$/.test(new URL(s).protocol)) {
    throw new ConfigError(`${at} must be an http(s) URL; got "${s}"`);
  }
  return s;
}

function mongoUri(v: string): string {
  // The message must not echo the URI: it may carry a password.
  if (!/^mongodb(\+srv)?:\/\//.test(v)) {
    throw new ConfigError("MONGODB_URI must start with mongodb:// or mongodb+srv://");
  }
  return v;
}

/** A listen address, checked by the listeners' own parser. */
function hostPort(v: string, at: string): string {
  try {
    parseHostPort(v, at);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  return v;
}

/** Splits a validated host:port; IPv6 brackets are removed (the listeners' parser). */
export const splitHostPort = (v: string): HostPort => parseHostPort(v);
