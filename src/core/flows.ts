// The flows tokenvend runs itself, wired beside the vendor they store into: the authorization
// code flow (authorization-flow.ts), the device grant (device-flow.ts), token exchange
// (token-exchange.ts), the renewal of unused refresh tokens (unused-refresh.ts) and the sweep
// of expired flow state. Renewal failures (renewal-failures.ts) are made before the vendor,
// which reports to them.

import type { Meter, Tracer } from "@opentelemetry/api";
import { type AuthorizationFlow, createAuthorizationFlow } from "./authorization-flow.ts";
import { createCatalog, type GrantSettings, type ProviderSettings } from "./catalog.ts";
import { classifiedFlowStates } from "./classified-store.ts";
import type { Clock, Random } from "./clock.ts";
import { createDeviceFlow, type DeviceFlow } from "./device-flow.ts";
import type { ProviderFlowSettings } from "./flow-settings.ts";
import type { FlowStateStore } from "./flow-state-store.ts";
import type { FlowUpstream } from "./flow-upstream.ts";
import type { ForcedRefreshPolicy } from "./forced-refresh.ts";
import { errorText, type Logger } from "./logger.ts";
import { startRepeating } from "./repeating.ts";
import { createTokenExchanges, type TokenExchanges } from "./token-exchange.ts";
import type { TokenStore } from "./token-store.ts";
import type { TokenVendor } from "./token-vendor.ts";
import { startUnusedRefresh, type UnusedRefresh } from "./unused-refresh.ts";

export interface FlowsTuning {
  /** How long a StartAuthorization state may be completed. */
  readonly authorizationStateTtlMs: number;
  readonly upstreamTimeoutMs: number;
  readonly unusedRefreshScanIntervalMs: number;
  readonly unusedRefreshRatePerSecond: number;
  readonly sweepIntervalMs: number;
  readonly idleEvictMs: number;
  readonly minRefreshIntervalMs: number;
  readonly maxStreams: number;
  /** The exchanged tokens' cache bounds and forced refreshes (token-exchange.ts). */
  readonly exchangeCache: { readonly maxKeys: number; readonly maxBytes: number };
  readonly forcedRefresh: ForcedRefreshPolicy;
}

export interface FlowsOptions extends FlowsTuning {
  readonly vendor: TokenVendor;
  /** The classified token store would do; the flows only read it through unusedSessions. */
  readonly store: TokenStore;
  readonly states: FlowStateStore;
  readonly upstream: FlowUpstream;
  readonly providers: ReadonlyMap<string, ProviderSettings & ProviderFlowSettings>;
  readonly grants: ReadonlyMap<string, GrantSettings>;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  readonly replicaId: string;
  readonly tracer?: Tracer | undefined;
  readonly meter?: Meter | undefined;
}

export interface Flows {
  readonly authorization: AuthorizationFlow;
  readonly device: DeviceFlow;
  readonly exchanges: TokenExchanges;
  readonly unusedRefresh: UnusedRefresh;
  close(): void;
}

export function createFlows(opts: FlowsOptions): Flows {
  const { vendor, clock, logger } = opts;
  const states = classifiedFlowStates(opts.states);
  const lifetimeOf = (provider: string) => {
    const p = opts.providers.get(provider);
    if (p === undefined) throw new TypeError(`provider "${provider}" is not configured`);
    return p.lifetime;
  };
  const common = {
    states,
    upstream: opts.upstream,
    providers: opts.providers,
    lifetimeOf,
    storeTokens: vendor.storeUpstreamTokens,
    clock,
    logger,
    signal: opts.signal,
    upstreamTimeoutMs: opts.upstreamTimeoutMs,
  };
  const authorization = createAuthorizationFlow({
    ...common,
    stateTtlMs: opts.authorizationStateTtlMs,
  });
  const device = createDeviceFlow({ ...common, random: opts.random });
  const exchanges = createTokenExchanges({
    source: vendor,
    upstream: opts.upstream,
    catalog: createCatalog(opts.providers, opts.grants),
    providers: opts.providers,
    clock,
    random: opts.random,
    logger,
    signal: opts.signal,
    refreshTimeoutMs: opts.upstreamTimeoutMs,
    idleEvictMs: opts.idleEvictMs,
    minRefreshIntervalMs: opts.minRefreshIntervalMs,
    maxStreams: opts.maxStreams,
    cacheMaxKeys: opts.exchangeCache.maxKeys,
    cacheMaxBytes: opts.exchangeCache.maxBytes,
    forcedRefresh: opts.forcedRefresh,
    tracer: opts.tracer,
    meter: opts.meter,
  });
  const unusedRefresh = startUnusedRefresh({
    store: opts.store,
    states,
    providers: opts.providers,
    renewSession: vendor.renewSession,
    clock,
    logger,
    signal: opts.signal,
    scanIntervalMs: opts.unusedRefreshScanIntervalMs,
    ratePerSecond: opts.unusedRefreshRatePerSecond,
    replicaId: opts.replicaId,
  });
  const sweeper = startRepeating({
    clock,
    intervalMs: opts.sweepIntervalMs,
    signal: opts.signal,
    run: async () => {
      await states.sweep(clock.now()).catch((err: unknown) => {
        logger.warn({ err: errorText(err) }, "flow state sweep failed");
      });
    },
  });
  return {
    authorization,
    device,
    exchanges,
    unusedRefresh,
    close() {
      sweeper.stop();
      unusedRefresh.stop();
      exchanges.close();
    },
  };
}
