// A provider's options for the flows tokenvend runs itself (authorization code, device grant,
// token exchange, unused-refresh renewal, failure webhook) and its client's credentials beyond
// one secret: several secrets for rotation (files or variables) and a private key file for
// private_key_jwt. Secrets and keys are never inline. Defaults: config-defaults.ts.

import { configDefaults } from "./config-defaults.ts";
import type { SecretSources } from "./config-provider.ts";
import {
  bool,
  ConfigError,
  duration,
  int,
  known,
  num,
  obj,
  str,
  strList,
  url,
} from "./config-values.ts";
import type { ProviderFlowSettings, WebhookSettings } from "./core/flow-settings.ts";

export const flowProviderKeys = [
  "clientSecretFiles",
  "clientSecretEnvs",
  "privateKeyFile",
  "privateKeyId",
  "authorizationEndpoint",
  "deviceAuthorizationEndpoint",
  "redirectUris",
  "authorizationScopes",
  "tokenExchange",
  "maxUnusedRefresh",
  "webhook",
] as const;

export interface ProviderFlowConfig extends Omit<ProviderFlowSettings, "clientId"> {
  readonly authorizationEndpoint?: string | undefined;
  readonly deviceAuthorizationEndpoint?: string | undefined;
}

/** Reads one secret from a file or an environment variable, naming the option on failure. */
export function readSecret(
  opts: SecretSources,
  from: { file?: string | undefined; env?: string | undefined },
  at: string,
): string | undefined {
  if (from.file !== undefined) {
    try {
      return opts.readFile(from.file).trim();
    } catch (err) {
      throw new ConfigError(
        `${at}: cannot read ${from.file}: ${(err as NodeJS.ErrnoException).code ?? "error"}`,
      );
    }
  }
  if (from.env !== undefined) {
    const v = opts.env[from.env];
    if (v === undefined || v === "") {
      throw new ConfigError(`${at}: environment variable ${from.env} is not set`);
    }
    return v;
  }
  return undefined;
}

/** The extra secrets of clientSecretFiles and clientSecretEnvs, in that order. */
export function extraSecrets(
  p: Record<string, unknown>,
  at: string,
  opts: SecretSources,
): string[] {
  const files = strList(p.clientSecretFiles, `${at}.clientSecretFiles`);
  const envs = strList(p.clientSecretEnvs, `${at}.clientSecretEnvs`);
  return [
    ...files.map((f, i) => readSecret(opts, { file: f }, `${at}.clientSecretFiles[${i}]`) ?? ""),
    ...envs.map((e, i) => readSecret(opts, { env: e }, `${at}.clientSecretEnvs[${i}]`) ?? ""),
  ];
}

/** private_key_jwt's key: the PEM text of privateKeyFile, and privateKeyId. */
export function privateKeyOf(
  p: Record<string, unknown>,
  at: string,
  opts: SecretSources,
): { pem: string; kid?: string } | undefined {
  const file = str(p.privateKeyFile, `${at}.privateKeyFile`);
  if (file === undefined) return undefined;
  const pem = readSecret(opts, { file }, `${at}.privateKeyFile`) ?? "";
  if (!pem.includes("PRIVATE KEY-----")) {
    throw new ConfigError(`${at}.privateKeyFile: ${file} is not a PEM private key`);
  }
  const kid = str(p.privateKeyId, `${at}.privateKeyId`);
  return kid !== undefined ? { pem, kid } : { pem };
}

export function parseProviderFlows(
  p: Record<string, unknown>,
  at: string,
  opts: SecretSources,
): ProviderFlowConfig {
  const redirectUris = strList(p.redirectUris, `${at}.redirectUris`).map((u, i) => {
    const parsed = URL.parse(u);
    if (parsed === null || parsed.hash !== "" || !/^https?:$/.test(parsed.protocol)) {
      throw new ConfigError(
        `${at}.redirectUris[${i}] must be an absolute http(s) URL without a fragment`,
      );
    }
    return u;
  });
  let webhook: WebhookSettings | undefined;
  if (p.webhook !== undefined) {
    const w = obj(p.webhook, `${at}.webhook`);
    known(w, `${at}.webhook`, ["url", "secretFile", "secretEnv"]);
    const hookUrl = url(w.url, `${at}.webhook.url`);
    if (hookUrl === undefined) throw new ConfigError(`${at}.webhook.url is required`);
    const secret = readSecret(
      opts,
      {
        file: str(w.secretFile, `${at}.webhook.secretFile`),
        env: str(w.secretEnv, `${at}.webhook.secretEnv`),
      },
      `${at}.webhook`,
    );
    if (secret === undefined || !/^(whsec_)?[A-Za-z0-9+/]{16,}={0,2}$/.test(secret)) {
      throw new ConfigError(
        `${at}.webhook: set secretFile or secretEnv to a base64 secret (e.g. whsec_$(openssl rand -base64 32))`,
      );
    }
    webhook = { url: hookUrl, secret };
  }
  return {
    authorizationEndpoint: url(p.authorizationEndpoint, `${at}.authorizationEndpoint`),
    deviceAuthorizationEndpoint: url(
      p.deviceAuthorizationEndpoint,
      `${at}.deviceAuthorizationEndpoint`,
    ),
    redirectUris,
    authorizationScopes:
      p.authorizationScopes === undefined
        ? [...configDefaults.authorizationScopes]
        : strList(p.authorizationScopes, `${at}.authorizationScopes`),
    tokenExchange: bool(p.tokenExchange, `${at}.tokenExchange`, false),
    maxUnusedRefreshMs: duration(
      p.maxUnusedRefresh,
      `${at}.maxUnusedRefresh`,
      configDefaults.maxUnusedRefreshMs,
    ),
    webhook,
  };
}

/** The service-wide tunables of the flows. */
export interface FlowTuningConfig {
  readonly authorizationStateTtlMs: number;
  readonly unusedRefreshScanIntervalMs: number;
  readonly unusedRefreshRatePerSecond: number;
  readonly webhookMaxAttempts: number;
  readonly webhookTimeoutMs: number;
}

export const flowRootKeys = ["authorizationStateTtl", "unusedRefresh", "webhooks"] as const;

export function parseFlowTuning(root: Record<string, unknown>): FlowTuningConfig {
  const d = configDefaults;
  const unused = obj(root.unusedRefresh ?? {}, "unusedRefresh");
  known(unused, "unusedRefresh", ["scanInterval", "ratePerSecond"]);
  const hooks = obj(root.webhooks ?? {}, "webhooks");
  known(hooks, "webhooks", ["maxAttempts", "timeout"]);
  const ttl = duration(
    root.authorizationStateTtl,
    "authorizationStateTtl",
    d.authorizationStateTtlMs,
  );
  if (ttl < 1000) throw new ConfigError("authorizationStateTtl must be at least 1s");
  const scan = duration(
    unused.scanInterval,
    "unusedRefresh.scanInterval",
    d.unusedRefreshScanIntervalMs,
  );
  if (scan < 1000) throw new ConfigError("unusedRefresh.scanInterval must be at least 1s");
  return {
    authorizationStateTtlMs: ttl,
    unusedRefreshScanIntervalMs: scan,
    unusedRefreshRatePerSecond: num(
      unused.ratePerSecond,
      "unusedRefresh.ratePerSecond",
      d.unusedRefreshRatePerSecond,
      0.01,
      1000,
    ),
    webhookMaxAttempts: int(
      hooks.maxAttempts,
      "webhooks.maxAttempts",
      d.webhookMaxAttempts,
      1,
      100,
    ),
    webhookTimeoutMs: duration(hooks.timeout, "webhooks.timeout", d.webhookTimeoutMs),
  };
}
