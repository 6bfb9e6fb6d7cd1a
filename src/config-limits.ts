// The `limits` section: what bounds a replica's memory and what it asks of its providers,
// whatever callers send. Defaults in config-defaults.ts (configDefaults.limits); a provider's
// own request limits in providers.NAME.limits (parseProviderLimits).

import { permissions } from "./auth/index.ts";
import { configDefaults } from "./config-defaults.ts";
import { bool, ConfigError, duration, int, known, obj } from "./config-values.ts";

export interface CacheLimits {
  readonly maxKeys: number;
  readonly maxBytes: number;
}

export interface ProviderRequestLimits {
  readonly maxConcurrent: number;
  readonly ratePerSecond: number;
  readonly maxQueued: number;
}

export interface CallerLimitsConfig {
  /** Off: no per-caller limit (limits.callers.disabled). */
  readonly enabled: boolean;
  /** Requests per second per caller and RPC, unless `rpcs` names the RPC. */
  readonly requestsPerSecond: number;
  readonly rpcs: ReadonlyMap<string, number>;
  readonly maxStreams: number;
  readonly newSessionsPerSecond: number;
  /** Calls a second that may fail by the caller's mistake (auth/caller-limits.ts); 0: off. */
  readonly failuresPerSecond: number;
  /** The longest a refusal is held before it is answered (auth/caller-limits.ts); 0: at once. */
  readonly refusalHoldMs: number;
  readonly maxHeldRefusals: number;
}

export interface LimitsConfig {
  readonly cache: CacheLimits;
  readonly exchangeCache: CacheLimits;
  /** The memory and file stores. */
  readonly store: CacheLimits & { readonly tombstoneRetentionMs: number };
  readonly flowStates: { readonly maxRecords: number };
  readonly forcedRefresh: {
    readonly minIntervalMs: number;
    readonly budget: number;
    readonly windowMs: number;
  };
  /** Every provider's, unless providers.NAME.limits says otherwise. */
  readonly providers: ProviderRequestLimits;
  readonly callers: CallerLimitsConfig;
}

/** The RPC names limits.callers.rpcs may name: the policy's permissions that are RPCs. */
export const rpcNames = permissions.filter((p) => p !== "RevokeUpstream");

const sizeUnits: Record<string, number> = { "": 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };

/** A size in bytes: an integer, or a string like "64Mi" (Ki, Mi, Gi). */
export function bytes(v: unknown, at: string, dflt: number, min: number): number {
  if (v === undefined || v === null) return dflt;
  const m = typeof v === "string" ? /^(\d+)(Ki|Mi|Gi)?$/.exec(v) : undefined;
  const n =
    typeof v === "number" ? v : m ? Number(m[1]) * (sizeUnits[m[2] ?? ""] as number) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new ConfigError(
      `${at} must be a size of at least ${min} bytes: an integer, or a string such as "64Mi"; got ${JSON.stringify(v)}`,
    );
  }
  return n;
}

function cacheLimits(v: unknown, at: string, d: CacheLimits): CacheLimits {
  const c = obj(v ?? {}, at);
  known(c, at, ["maxKeys", "maxBytes"]);
  return {
    maxKeys: int(c.maxKeys, `${at}.maxKeys`, d.maxKeys, 1, 100_000_000),
    maxBytes: bytes(c.maxBytes, `${at}.maxBytes`, d.maxBytes, 1024 * 1024),
  };
}

/** Per-provider request limits at `at`, over `d` (the section's or the defaults). */
export function parseProviderLimits(
  v: unknown,
  at: string,
  d: ProviderRequestLimits,
): ProviderRequestLimits {
  const p = obj(v ?? {}, at);
  known(p, at, ["maxConcurrent", "ratePerSecond", "maxQueued"]);
  return {
    maxConcurrent: int(p.maxConcurrent, `${at}.maxConcurrent`, d.maxConcurrent, 1, 10_000),
    ratePerSecond: int(p.ratePerSecond, `${at}.ratePerSecond`, d.ratePerSecond, 1, 100_000),
    maxQueued: int(p.maxQueued, `${at}.maxQueued`, d.maxQueued, 0, 10_000_000),
  };
}

function callerLimits(v: unknown): CallerLimitsConfig {
  const at = "limits.callers";
  const d = configDefaults.limits.callers;
  const c = obj(v ?? {}, at);
  known(c, at, [
    "disabled",
    "requestsPerSecond",
    "rpcs",
    "maxStreams",
    "newSessionsPerSecond",
    "failuresPerSecond",
    "refusalHold",
    "maxHeldRefusals",
  ]);
  const hold = duration(c.refusalHold, `${at}.refusalHold`, d.refusalHoldMs);
  // The limits' windows are a second long: a longer hold only ties up the held calls.
  if (hold > 10_000) throw new ConfigError(`${at}.refusalHold must be at most 10s`);
  const rps = int(c.requestsPerSecond, `${at}.requestsPerSecond`, d.requestsPerSecond, 1, 1e6);
  const rpcs = new Map<string, number>(Object.entries(d.rpcs));
  const given = obj(c.rpcs ?? {}, `${at}.rpcs`);
  known(given, `${at}.rpcs`, rpcNames);
  for (const [name, n] of Object.entries(given))
    rpcs.set(name, int(n, `${at}.rpcs.${name}`, rps, 1, 1e6));
  return {
    enabled: !bool(c.disabled, `${at}.disabled`, false),
    requestsPerSecond: rps,
    rpcs,
    maxStreams: int(c.maxStreams, `${at}.maxStreams`, d.maxStreams, 1, 1_000_000),
    newSessionsPerSecond: int(
      c.newSessionsPerSecond,
      `${at}.newSessionsPerSecond`,
      d.newSessionsPerSecond,
      1,
      1e6,
    ),
    failuresPerSecond: int(
      c.failuresPerSecond,
      `${at}.failuresPerSecond`,
      d.failuresPerSecond,
      0,
      1e6,
    ),
    refusalHoldMs: hold,
    maxHeldRefusals: int(c.maxHeldRefusals, `${at}.maxHeldRefusals`, d.maxHeldRefusals, 0, 1e6),
  };
}

export function parseLimits(root: Record<string, unknown>): LimitsConfig {
  const d = configDefaults.limits;
  const l = obj(root.limits ?? {}, "limits");
  known(l, "limits", [
    "cache",
    "exchangeCache",
    "store",
    "flowStates",
    "refresh",
    "providers",
    "callers",
  ]);
  const store = obj(l.store ?? {}, "limits.store");
  known(store, "limits.store", ["maxKeys", "maxBytes", "tombstoneRetention"]);
  const flows = obj(l.flowStates ?? {}, "limits.flowStates");
  known(flows, "limits.flowStates", ["maxRecords"]);
  const refresh = obj(l.refresh ?? {}, "limits.refresh");
  known(refresh, "limits.refresh", ["minInterval", "budget", "window"]);
  const f = d.forcedRefresh;
  const windowMs = duration(refresh.window, "limits.refresh.window", f.windowMs);
  if (windowMs < 1000) throw new ConfigError("limits.refresh.window must be at least 1s");
  return {
    cache: cacheLimits(l.cache, "limits.cache", d.cache),
    exchangeCache: cacheLimits(l.exchangeCache, "limits.exchangeCache", d.exchangeCache),
    store: {
      ...cacheLimits({ maxKeys: store.maxKeys, maxBytes: store.maxBytes }, "limits.store", d.store),
      tombstoneRetentionMs: duration(
        store.tombstoneRetention,
        "limits.store.tombstoneRetention",
        d.store.tombstoneRetentionMs,
      ),
    },
    flowStates: {
      maxRecords: int(
        flows.maxRecords,
        "limits.flowStates.maxRecords",
        d.flowStates.maxRecords,
        1,
        1e8,
      ),
    },
    forcedRefresh: {
      minIntervalMs: duration(refresh.minInterval, "limits.refresh.minInterval", f.minIntervalMs),
      budget: int(refresh.budget, "limits.refresh.budget", f.budget, 1, 1e6),
      windowMs,
    },
    providers: parseProviderLimits(l.providers, "limits.providers", d.providers),
    callers: callerLimits(l.callers),
  };
}
