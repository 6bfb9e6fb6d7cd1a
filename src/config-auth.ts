// The security sections of the config: auth (who may call), policy (what they
// may touch), tls (both listeners) and audit; the HTTP listener's host
// allow-list and CORS are in http. Validated once, here, with errors that name
// the option; defaults from config-defaults.ts. API keys and the audit key are
// read from files (or the environment), never inline.

import { parse as parseYamlText } from "yaml";
import type {
  ApiKeyEntry,
  JwtIssuerConfig,
  Permission,
  PolicyRule,
  SessionScope,
} from "./auth/index.ts";
import { apiKeyIdShape, permissions } from "./auth/index.ts";
import type { LoadConfigOptions } from "./config.ts";
import { configDefaults } from "./config-defaults.ts";
import {
  bool,
  ConfigError,
  duration,
  int,
  known,
  obj,
  str,
  strList,
  url,
} from "./config-values.ts";

export interface AuthConfig {
  /** Callers must authenticate. False: nobody is asked (dev, or auth.disabled on loopback). */
  readonly enabled: boolean;
  /** auth.disabled: true was written in the config (npm start needs it to run without auth). */
  readonly explicitlyDisabled: boolean;
  readonly jwtIssuers: readonly JwtIssuerConfig[];
  /** Verified bearer tokens remembered until they expire. */
  readonly jwtCacheEntries: number;
  /** Issuers of end users' session JWTs (tsid, client_id). */
  readonly sessionJwtIssuers: readonly JwtIssuerConfig[];
  readonly apiKeys: readonly ApiKeyEntry[] | undefined;
  /** Client certificates identify callers (needs tls.clientCaFile). */
  readonly mtls: boolean;
}

export interface TlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile: string | undefined;
  readonly requireClientCert: boolean;
  readonly reloadIntervalMs: number;
}

export interface AuditConfig {
  readonly target: { readonly kind: "stdout" } | { readonly kind: "file"; readonly path: string };
  readonly hmacKey: Buffer;
  readonly failClosed: boolean;
}

export interface SecurityConfig {
  readonly auth: AuthConfig;
  readonly policy: readonly PolicyRule[];
  readonly tls: TlsConfig | undefined;
  readonly audit: AuditConfig | undefined;
  /** Host names the HTTP listener answers to (Host / :authority). */
  readonly allowedHosts: readonly string[];
  /** Browser origins allowed cross-origin on the HTTP listener. */
  readonly corsOrigins: readonly string[];
}

function issuers(
  v: unknown,
  at: string,
  kindDefault: "kubernetes" | "oidc",
  opts: LoadConfigOptions,
): JwtIssuerConfig[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ConfigError(`${at} must be a list of issuers`);
  const d = configDefaults.jwt;
  return v.map((raw, i) => {
    const a = `${at}[${i}]`;
    const o = obj(raw, a);
    known(o, a, [
      "issuer",
      "kind",
      "jwksUri",
      "audiences",
      "algorithms",
      "maxTokenAge",
      "clockTolerance",
      "jwksCooldown",
      "jwksMaxAge",
      "jwksTimeout",
      "caFile",
      "tokenFile",
    ]);
    const issuer = str(o.issuer, `${a}.issuer`);
    if (issuer === undefined || issuer === "") throw new ConfigError(`${a}.issuer is required`);
    const kind = str(o.kind, `${a}.kind`) ?? kindDefault;
    if (kind !== "kubernetes" && kind !== "oidc") {
      throw new ConfigError(`${a}.kind must be kubernetes or oidc; got "${kind}"`);
    }
    const audiences = strList(o.audiences, `${a}.audiences`);
    if (audiences.length === 0)
      throw new ConfigError(
        `${a}.audiences must name at least one audience (for Kubernetes: tokenvend)`,
      );
    const algorithms =
      o.algorithms === undefined ? [...d.algorithms] : strList(o.algorithms, `${a}.algorithms`);
    const bad = algorithms.find((alg) => !/^(RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$/.test(alg));
    if (bad !== undefined || algorithms.length === 0) {
      throw new ConfigError(
        `${a}.algorithms must be asymmetric JWS algorithms (RS256, ES256, EdDSA...); got "${bad ?? ""}"`,
      );
    }
    const maxAge =
      o.maxTokenAge === undefined ? undefined : duration(o.maxTokenAge, `${a}.maxTokenAge`, 0);
    // An in-cluster API server: its CA (read now) and a token file (read per fetch).
    const caFile = str(o.caFile, `${a}.caFile`);
    const caPem = caFile !== undefined ? readSecret(caFile, `${a}.caFile`, opts) : undefined;
    if (caPem !== undefined && !caPem.includes("-----BEGIN CERTIFICATE-----")) {
      throw new ConfigError(`${a}.caFile (${caFile}) holds no PEM certificate`);
    }
    const tokenFile = str(o.tokenFile, `${a}.tokenFile`);
    return {
      issuer,
      kind,
      jwksUri: url(o.jwksUri, `${a}.jwksUri`),
      audiences,
      algorithms,
      ...(maxAge !== undefined ? { maxTokenAgeMs: maxAge } : {}),
      clockToleranceMs: duration(o.clockTolerance, `${a}.clockTolerance`, d.clockToleranceMs),
      jwksCooldownMs: duration(o.jwksCooldown, `${a}.jwksCooldown`, d.jwksCooldownMs),
      jwksMaxAgeMs: duration(o.jwksMaxAge, `${a}.jwksMaxAge`, d.jwksMaxAgeMs),
      jwksTimeoutMs: duration(o.jwksTimeout, `${a}.jwksTimeout`, d.jwksTimeoutMs),
      ...(caPem !== undefined ? { caPem } : {}),
      ...(tokenFile !== undefined ? { tokenFile } : {}),
    };
  });
}

/** The keys file: `keys: [{ id, sha256, expires? }]` (what `npm run api-key` prints). */
function apiKeys(path: string, opts: LoadConfigOptions): ApiKeyEntry[] {
  const at = `auth.apiKeys.file (${path})`;
  let text: string;
  try {
    text = opts.readFile(path);
  } catch (err) {
    throw new ConfigError(`${at}: cannot be read: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = parseYamlText(text);
  } catch (err) {
    throw new ConfigError(`${at}: not valid YAML: ${(err as Error).message}`);
  }
  const root = obj(parsed ?? {}, at);
  known(root, at, ["keys"]);
  if (!Array.isArray(root.keys)) throw new ConfigError(`${at}: keys must be a list`);
  const seen = new Set<string>();
  return root.keys.map((raw, i) => {
    const a = `${at} keys[${i}]`;
    const o = obj(raw, a);
    known(o, a, ["id", "sha256", "expires"]);
    const id = str(o.id, `${a}.id`) ?? "";
    if (!apiKeyIdShape.test(id)) throw new ConfigError(`${a}.id must match ${apiKeyIdShape}`);
    if (seen.has(id)) throw new ConfigError(`${a}.id "${id}" appears twice`);
    seen.add(id);
    const sha256 = str(o.sha256, `${a}.sha256`) ?? "";
    if (!/^[0-9a-f]{64}$/.test(sha256))
      throw new ConfigError(`${a}.sha256 must be 64 lower-case hex digits`);
    const expires =
      o.expires instanceof Date ? o.expires.toISOString() : str(o.expires, `${a}.expires`);
    const expiresAt = expires !== undefined ? Date.parse(expires) : undefined;
    if (expiresAt !== undefined && !Number.isFinite(expiresAt)) {
      throw new ConfigError(`${a}.expires must be an ISO 8601 time; got "${expires}"`);
    }
    return { id, sha256, ...(expiresAt !== undefined ? { expiresAt } : {}) };
  });
}

function rules(v: unknown): PolicyRule[] {
  const root = obj(v ?? {}, "policy");
  known(root, "policy", ["rules"]);
  if (root.rules === undefined || root.rules === null) return [];
  if (!Array.isArray(root.rules)) throw new ConfigError("policy.rules must be a list");
  const names = new Set<string>();
  return root.rules.map((raw, i) => {
    const a = `policy.rules[${i}]`;
    const o = obj(raw, a);
    known(o, a, ["name", "callers", "allow", "providers", "grants", "sessions", "tenant"]);
    const name = str(o.name, `${a}.name`) ?? `rule-${i + 1}`;
    if (names.has(name)) throw new ConfigError(`${a}.name "${name}" appears twice`);
    names.add(name);
    const callers = strList(o.callers, `${a}.callers`);
    if (callers.length === 0) throw new ConfigError(`${a}.callers must name at least one caller`);
    if (callers.includes("*"))
      throw new ConfigError(`${a}.callers: "*" alone would let any caller in; name them`);
    const allow = strList(o.allow, `${a}.allow`);
    const unknown = allow.find((p) => !(permissions as readonly string[]).includes(p));
    if (unknown !== undefined || allow.length === 0) {
      throw new ConfigError(
        `${a}.allow must list permissions of ${permissions.join(", ")}; got "${unknown ?? ""}"`,
      );
    }
    const sessions = str(o.sessions, `${a}.sessions`) ?? "own";
    if (!["own", "any", "token"].includes(sessions)) {
      throw new ConfigError(`${a}.sessions must be own, any or token; got "${sessions}"`);
    }
    const tenant = str(o.tenant, `${a}.tenant`);
    return {
      name,
      callers,
      allow: allow as Permission[],
      providers: strList(o.providers, `${a}.providers`),
      grants: strList(o.grants, `${a}.grants`),
      sessions: sessions as SessionScope,
      ...(tenant !== undefined ? { tenant } : {}),
    };
  });
}

function base64Key(text: string, at: string): Buffer {
  const key = Buffer.from(text.trim(), "base64");
  if (key.length < 32)
    throw new ConfigError(`${at} must be at least 32 bytes, base64 (openssl rand -base64 32)`);
  return key;
}

export function parseSecurity(
  root: Record<string, unknown>,
  http: Record<string, unknown>,
  opts: LoadConfigOptions,
): SecurityConfig {
  const env = opts.env;
  const a = obj(root.auth ?? {}, "auth");
  known(a, "auth", ["disabled", "jwt", "sessionJwt", "apiKeys", "mtls"]);
  const disabled = bool(a.disabled, "auth.disabled", false);
  const jwt = obj(a.jwt ?? {}, "auth.jwt");
  known(jwt, "auth.jwt", ["issuers", "cacheEntries"]);
  const sessionJwt = obj(a.sessionJwt ?? {}, "auth.sessionJwt");
  known(sessionJwt, "auth.sessionJwt", ["issuers"]);
  const keys = obj(a.apiKeys ?? {}, "auth.apiKeys");
  known(keys, "auth.apiKeys", ["file"]);
  const keysFile = str(keys.file, "auth.apiKeys.file");
  const mtls = bool(a.mtls, "auth.mtls", false);
  const jwtIssuers = issuers(jwt.issuers, "auth.jwt.issuers", "kubernetes", opts);
  const auth: AuthConfig = {
    enabled: !disabled && (jwtIssuers.length > 0 || keysFile !== undefined || mtls),
    explicitlyDisabled: disabled,
    jwtIssuers,
    jwtCacheEntries: int(
      jwt.cacheEntries,
      "auth.jwt.cacheEntries",
      configDefaults.jwt.cacheEntries,
      0,
      1_000_000,
    ),
    sessionJwtIssuers: issuers(sessionJwt.issuers, "auth.sessionJwt.issuers", "oidc", opts),
    apiKeys: keysFile !== undefined ? apiKeys(keysFile, opts) : undefined,
    mtls,
  };
  if (disabled && (jwtIssuers.length > 0 || keysFile !== undefined || mtls)) {
    throw new ConfigError("auth.disabled: true cannot go with auth.jwt, auth.apiKeys or auth.mtls");
  }

  const t = root.tls === undefined ? undefined : obj(root.tls, "tls");
  let tls: TlsConfig | undefined;
  if (t !== undefined) {
    known(t, "tls", ["certFile", "keyFile", "clientCaFile", "requireClientCert", "reloadInterval"]);
    const certFile = str(t.certFile, "tls.certFile");
    const keyFile = str(t.keyFile, "tls.keyFile");
    if (certFile === undefined || keyFile === undefined)
      throw new ConfigError("tls needs certFile and keyFile");
    const clientCaFile = str(t.clientCaFile, "tls.clientCaFile");
    const requireClientCert = bool(t.requireClientCert, "tls.requireClientCert", false);
    if (requireClientCert && clientCaFile === undefined)
      throw new ConfigError("tls.requireClientCert needs tls.clientCaFile");
    tls = {
      certFile,
      keyFile,
      clientCaFile,
      requireClientCert,
      reloadIntervalMs: duration(
        t.reloadInterval,
        "tls.reloadInterval",
        configDefaults.tlsReloadIntervalMs,
      ),
    };
  }
  if (mtls && tls?.clientCaFile === undefined)
    throw new ConfigError("auth.mtls needs tls.clientCaFile (the CA client certificates chain to)");

  const au = obj(root.audit ?? {}, "audit");
  known(au, "audit", ["sink", "file", "hmacKeyFile", "failClosed"]);
  const sink = str(au.sink, "audit.sink") ?? "none";
  let audit: AuditConfig | undefined;
  if (sink === "stdout" || sink === "file") {
    const keyFile = str(au.hmacKeyFile, "audit.hmacKeyFile");
    const keyText =
      env.TOKENVEND_AUDIT_HMAC_KEY ??
      (keyFile !== undefined ? readSecret(keyFile, "audit.hmacKeyFile", opts) : undefined);
    if (keyText === undefined)
      throw new ConfigError(
        "audit needs an HMAC key for session ids: audit.hmacKeyFile or TOKENVEND_AUDIT_HMAC_KEY",
      );
    const path = str(au.file, "audit.file");
    if (sink === "file" && path === undefined)
      throw new ConfigError("audit.sink: file needs audit.file");
    audit = {
      target: sink === "file" ? { kind: "file", path: path as string } : { kind: "stdout" },
      hmacKey: base64Key(
        keyText,
        env.TOKENVEND_AUDIT_HMAC_KEY !== undefined
          ? "TOKENVEND_AUDIT_HMAC_KEY"
          : "audit.hmacKeyFile",
      ),
      failClosed: bool(au.failClosed, "audit.failClosed", false),
    };
  } else if (sink !== "none") {
    throw new ConfigError(`audit.sink must be none, stdout or file; got "${sink}"`);
  }
  return {
    auth,
    policy: rules(root.policy),
    tls,
    audit,
    allowedHosts:
      http.allowedHosts === undefined
        ? [...configDefaults.allowedHosts]
        : strList(http.allowedHosts, "http.allowedHosts"),
    corsOrigins: strList(http.corsOrigins, "http.corsOrigins"),
  };
}

function readSecret(path: string, at: string, opts: LoadConfigOptions): string {
  try {
    return opts.readFile(path);
  } catch (err) {
    throw new ConfigError(`${at}: cannot read ${path}: ${(err as Error).message}`);
  }
}
