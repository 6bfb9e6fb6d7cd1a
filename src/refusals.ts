// What `npm start` and `npm run dev` refuse to run with, as messages for a
// configuration error (exit 2). npm start: no caller authentication, unless
// the config says auth.disabled: true and every listener is on loopback.
// npm run dev (authentication off, by design): anything that looks like
// production, a shared or persistent store, keys, or a listener off loopback.

import type { Config } from "./config.ts";
import { parseHostPort } from "./transport/index.ts";

export function isLoopback(hostPort: string): boolean {
  const { host } = parseHostPort(hostPort);
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

const listeners = (c: Config) =>
  [
    ["grpc.listen", c.grpcListen],
    ["http.listen", c.httpListen],
    ["metrics.prometheusListen", c.prometheusListen],
    ["health.listen", c.healthListen],
  ].filter((l): l is [string, string] => l[1] !== undefined);

export function startRefusal(config: Config): string | undefined {
  if (config.auth.enabled) return undefined;
  if (!config.auth.explicitlyDisabled) {
    return "caller authentication is not configured: set auth.jwt.issuers, auth.apiKeys or auth.mtls (see README, Security), or auth.disabled: true with every listener on loopback";
  }
  const open = listeners(config).filter(([, l]) => !isLoopback(l));
  if (open.length > 0) {
    return `auth.disabled: true needs every listener on loopback; ${open.map(([k, l]) => `${k} is ${l}`).join(", ")}`;
  }
  return undefined;
}

const productionVariables = [
  "MONGODB_URI",
  "TOKENVEND_DATA_DIR",
  "TOKENVEND_ENCRYPTION_KEYS",
  "TOKENVEND_ENCRYPTION_KEY_FILES",
];
const listenVariables = [
  "TOKENVEND_GRPC_LISTEN",
  "TOKENVEND_HTTP_LISTEN",
  "TOKENVEND_PROMETHEUS_LISTEN",
  "TOKENVEND_HEALTH_LISTEN",
];

export function devRefusal(env: Readonly<Record<string, string | undefined>>): string | undefined {
  const set = productionVariables.filter((v) => env[v]);
  if (set.length > 0) {
    return `npm run dev runs without caller authentication and refuses production settings: unset ${set.join(", ")} (or use npm start)`;
  }
  const open = listenVariables.filter((v) => {
    const value = env[v];
    try {
      return value !== undefined && value !== "" && !isLoopback(value);
    } catch {
      return true;
    }
  });
  if (open.length > 0) {
    return `npm run dev listens on loopback only: ${open.map((v) => `${v}=${env[v]}`).join(", ")} is not`;
  }
  return undefined;
}

/** npm run dev with a config file: without caller authentication, every listener on loopback. */
export function devConfigRefusal(config: Config): string | undefined {
  if (config.auth.enabled) return undefined;
  const open = listeners(config).filter(([, l]) => !isLoopback(l));
  if (open.length > 0) {
    return `npm run dev without caller authentication listens on loopback only; ${open.map(([k, l]) => `${k} is ${l}`).join(", ")}`;
  }
  return undefined;
}
