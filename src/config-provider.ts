// One provider's config: how to reach its token endpoint, its client's
// credentials (never inline: from a file or an environment variable), and the
// lifetime and backoff policies of its tokens.

import { configDefaults } from "./config-defaults.ts";
import {
  extraSecrets,
  flowProviderKeys,
  type ProviderFlowConfig,
  parseProviderFlows,
  privateKeyOf,
  readSecret,
} from "./config-flows.ts";
import { type ProviderRequestLimits, parseProviderLimits } from "./config-limits.ts";
import {
  bool,
  ConfigError,
  duration,
  fraction,
  known,
  num,
  obj,
  str,
  strList,
  url,
} from "./config-values.ts";
import type { BackoffPolicy } from "./core/backoff.ts";
import type { LifetimePolicy } from "./core/lifetime.ts";
import type { UpstreamAuthMethod, UpstreamProviderConfig } from "./idp/upstream-client.ts";

export type AuthMethod = UpstreamAuthMethod;

/** A provider: what the upstream client needs to reach it, and the lifecycle policy for its tokens. */
export interface ProviderConfig extends UpstreamProviderConfig, ProviderFlowConfig {
  readonly name: string;
  /** Scopes asked for on refresh; empty keeps the originally granted scopes. */
  readonly refreshScopes: readonly string[];
  /** Plain http:// endpoints are refused unless on loopback or this is set. */
  readonly allowInsecureHttp: boolean;
  readonly lifetime: LifetimePolicy;
  readonly backoff: BackoffPolicy;
  /** Requests to this provider: concurrency, rate, queue (providers.NAME.limits over limits.providers). */
  readonly limits: ProviderRequestLimits;
}

/** Where a provider's secret may come from. */
export interface SecretSources {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile: (path: string) => string;
  /** limits.providers: what providers.NAME.limits overrides. */
  readonly providerLimits?: ProviderRequestLimits | undefined;
}

/** Provider and grant names. */
export const nameRe = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function parseProvider(name: string, value: unknown, opts: SecretSources): ProviderConfig {
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
    "limits",
    ...flowProviderKeys,
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
  if (
    !["client_secret_basic", "client_secret_post", "private_key_jwt", "none"].includes(authMethod)
  ) {
    throw new ConfigError(
      `${at}.authMethod must be client_secret_basic, client_secret_post, private_key_jwt or none; got "${authMethod}"`,
    );
  }
  const secretFile = str(p.clientSecretFile, `${at}.clientSecretFile`);
  const secretEnv = str(p.clientSecretEnv, `${at}.clientSecretEnv`);
  const clientSecrets = [
    ...(secretFile !== undefined || secretEnv !== undefined
      ? [
          readSecret(
            opts,
            { file: secretFile, env: secretEnv },
            secretFile !== undefined ? `${at}.clientSecretFile` : `${at}.clientSecretEnv`,
          ) ?? "",
        ]
      : []),
    ...extraSecrets(p, at, opts),
  ];
  const secretMethod = authMethod === "client_secret_basic" || authMethod === "client_secret_post";
  if (secretMethod && clientSecrets.length === 0) {
    throw new ConfigError(
      `${at}: authMethod ${authMethod} needs a secret: set ${at}.clientSecretFile or ${at}.clientSecretEnv (or the lists clientSecretFiles, clientSecretEnvs)`,
    );
  }
  const privateKey = privateKeyOf(p, at, opts);
  if (authMethod === "private_key_jwt" && privateKey === undefined) {
    throw new ConfigError(`${at}: authMethod private_key_jwt needs ${at}.privateKeyFile`);
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
    clientSecret: clientSecrets[0],
    clientSecrets: secretMethod ? clientSecrets : undefined,
    privateKey,
    authMethod,
    refreshScopes: strList(p.scopes, `${at}.scopes`),
    timeoutMs: duration(p.timeout, `${at}.timeout`, configDefaults.providerTimeoutMs),
    allowInsecureHttp: bool(p.allowInsecureHttp, `${at}.allowInsecureHttp`, false),
    lifetime,
    backoff,
    limits: parseProviderLimits(
      p.limits,
      `${at}.limits`,
      opts.providerLimits ?? configDefaults.limits.providers,
    ),
    ...parseProviderFlows(p, at, opts),
  };
}
