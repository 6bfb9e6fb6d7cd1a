// The limits of a replica, assembled from config (config-limits.ts): the per-provider request
// limiter (core/provider-limiter.ts) with its metrics, and the per-caller limits around the
// TokenService (rpc/access-limits.ts, auth/caller-limits.ts) with theirs.

import type { ServiceImpl } from "@connectrpc/connect";
import type { Meter } from "@opentelemetry/api";
import type { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import { createCallerLimits } from "./auth/index.ts";
import { type Config, configDefaults } from "./config.ts";
import type { Clock } from "./core/clock.ts";
import { createProviderLimiter, type ProviderLimiter } from "./core/provider-limiter.ts";
import { limitTokenService } from "./rpc/access-limits.ts";
import { attr, createLimitMetrics, createProviderMetrics } from "./telemetry/metrics.ts";

/** The provider limiter of config's providers, reporting to `meter`. */
export function providerLimiterOf(config: Config, clock: Clock, meter: Meter): ProviderLimiter {
  const m = createProviderMetrics(meter);
  const limiter = createProviderLimiter({
    clock,
    limitsOf: (provider) => {
      const p = config.providers.get(provider);
      return {
        ...(p?.limits ?? config.limits.providers),
        maxPauseMs: (p?.backoff ?? configDefaults.backoff).maxRetryAfterMs,
      };
    },
    onEvent: (e) => {
      const a = { [attr.provider]: e.provider };
      if (e.kind === "started") m.queueDuration.record(e.waitedMs / 1000, a);
      else if (e.kind === "shed") m.shed.add(1, { ...a, [attr.shedReason]: e.reason });
      else m.pauses.add(1, a);
    },
  });
  m.active.addCallback((r) => {
    for (const [p, u] of limiter.usage()) r.observe(u.active, { [attr.provider]: p });
  });
  m.queued.addCallback((r) => {
    for (const [p, u] of limiter.usage()) r.observe(u.queued, { [attr.provider]: p });
  });
  return limiter;
}

type Impl = ServiceImpl<typeof TokenService>;

/** The TokenService under config's per-caller limits (as it is when they are off). */
export function callerLimited(impl: Impl, config: Config, meter: Meter): Impl {
  const callers = config.limits.callers;
  if (!callers.enabled) return impl;
  const m = createLimitMetrics(meter);
  return limitTokenService(impl, {
    limits: createCallerLimits({ ...callers, methods: callers.rpcs }),
    onRefused: (limit, method) =>
      m.refusals.add(1, { [attr.limit]: limit, [attr.rpcMethod]: method }),
  });
}
