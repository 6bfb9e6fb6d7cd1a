// The limits of a replica, assembled from config (config-limits.ts): the per-provider request
// limiter (core/provider-limiter.ts) with its metrics, and the per-caller limits around the
// TokenService (rpc/access-limits.ts, auth/caller-limits.ts) with theirs.

import type { ServiceImpl } from "@connectrpc/connect";
import type { Meter } from "@opentelemetry/api";
import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import { createCallerLimits, type LimitKind } from "./auth/index.ts";
import { type Config, configDefaults } from "./config.ts";
import type { Clock } from "./core/clock.ts";
import { createProviderLimiter, type ProviderLimiter } from "./core/provider-limiter.ts";
import { limitTokenService, rateLimitedHook } from "./rpc/access-limits.ts";
import { attr, createLimitMetrics, createProviderMetrics } from "./telemetry/metrics.ts";
import type { Authenticate } from "./transport/index.ts";

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

/** Config's per-caller limits, one set for the listeners' hook and the TokenService. */
export interface CallerLimiting {
  /** The TokenService under the limits (as it is when they are off). */
  service(impl: Impl): Impl;
  /** The listeners' hook, with the request rate counted before the body is read. */
  readonly authenticate: Authenticate | undefined;
}

/**
 * `authenticate` is the listeners' hook (security.ts installs one whenever the limits are on):
 * the request rate is counted in it, streams and new sessions around the handlers.
 */
export function callerLimitingOf(
  config: Config,
  meter: Meter,
  authenticate: Authenticate | undefined,
): CallerLimiting {
  const callers = config.limits.callers;
  if (!callers.enabled) return { service: (impl) => impl, authenticate };
  const m = createLimitMetrics(meter);
  const limits = createCallerLimits({ ...callers, methods: callers.rpcs });
  m.held.addCallback((r) => r.observe(limits.held()));
  const opts = {
    limits,
    onRefused: (limit: LimitKind, method: string) =>
      m.refusals.add(1, { [attr.limit]: limit, [attr.rpcMethod]: method }),
  };
  const rateInHook = authenticate !== undefined;
  return {
    service: (impl) => limitTokenService(impl, { ...opts, rateInHook }),
    authenticate: rateInHook
      ? rateLimitedHook(authenticate, opts, `/${TokenService.typeName}/`)
      : undefined,
  };
}
