// Every metric tokenvend records, named and described in one place (the
// operator guide, docs/OPERATIONS.md, lists the same). Imports only
// @opentelemetry/api: the core creates its instruments from the meter it is
// given, a no-op one by default. Attribute values are small closed sets
// (provider and grant names come from config): no token, session id or
// message ever becomes a label.

import {
  type Attributes,
  type Counter,
  createNoopMeter,
  type Gauge,
  type Histogram,
  type Meter,
  type MetricOptions,
  type Observable,
  type ObservableCallback,
  type ObservableCounter,
  type ObservableGauge,
  type ObservableUpDownCounter,
  type UpDownCounter,
} from "@opentelemetry/api";

/** The instrumentation scope of everything tokenvend records. */
export const instrumentationScope = "tokenvend";

/** Attribute keys of tokenvend's own spans and metrics. */
export const attr = {
  provider: "tokenvend.provider",
  grant: "tokenvend.grant",
  grantType: "tokenvend.grant_type",
  attempt: "tokenvend.refresh.attempt",
  outcome: "tokenvend.refresh.outcome",
  source: "tokenvend.refresh.source",
  trigger: "tokenvend.refresh.trigger",
  /** On a caller's link to a refresh: it joined one that another call had started. */
  shared: "tokenvend.refresh.shared",
  generation: "tokenvend.token.generation",
  cacheResult: "tokenvend.cache.result",
  watchReason: "tokenvend.watch.reason",
  oauthError: "tokenvend.oauth.error",
  sweepKind: "tokenvend.sweep.kind",
  sweepOutcome: "tokenvend.sweep.outcome",
  failureReason: "tokenvend.failure.reason",
  webhookOutcome: "tokenvend.webhook.outcome",
  unreadableReason: "tokenvend.store.unreadable_reason",
  /** Which key cache: tokens (the vendor's) or exchanges (exchanged tokens). */
  cache: "tokenvend.cache.name",
  evictionReason: "tokenvend.cache.eviction_reason",
  refusalReason: "tokenvend.refresh.refusal_reason",
  shedReason: "tokenvend.provider.shed_reason",
  /** Which per-caller limit refused a call: rate, streams, sessions. */
  limit: "tokenvend.limit",
  rpcMethod: "rpc.method",
} as const;

export type RefreshOutcome =
  | "success"
  | "rejected"
  | "no_refresh_token"
  | "unavailable"
  | "store_unavailable"
  | "not_found"
  | "error";
export type RefreshSource = "store" | "provider";
/** caller: a call waits for it; revalidate: a call found a stale token and did not wait; background: a watcher's renewal. */
export type RefreshTrigger = "caller" | "revalidate" | "background";

// Cache hits take a fraction of a millisecond, refreshes up to the provider's timeout.
const secondsBuckets = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
  30,
];

const seconds = (description: string): MetricOptions => ({
  description,
  unit: "s",
  advice: { explicitBucketBoundaries: secondsBuckets },
});

export interface VendorMetrics {
  readonly refreshes: Counter;
  readonly refreshDuration: Histogram;
  readonly cacheLookups: ObservableCounter;
  readonly claimWaits: Counter;
  readonly claimTakeovers: Counter;
  readonly unreadable: Counter;
  readonly streams: ObservableUpDownCounter;
  readonly watchers: ObservableUpDownCounter;
  readonly cacheKeys: ObservableUpDownCounter;
  readonly cacheBytes: ObservableUpDownCounter;
  readonly cacheEvictions: Counter;
  readonly refreshRefusals: Counter;
}

export function createVendorMetrics(meter: Meter): VendorMetrics {
  return {
    refreshes: meter.createCounter("tokenvend.refreshes", {
      description:
        "Refreshes run by this replica, by provider, grant type, outcome and source (store: another replica had renewed)",
      unit: "{refresh}",
    }),
    refreshDuration: meter.createHistogram(
      "tokenvend.refresh.duration",
      seconds("Duration of a refresh, from the store check to the persisted result"),
    ),
    cacheLookups: meter.createObservableCounter("tokenvend.cache.lookups", {
      description:
        "Token lookups by result: hit (served from memory) or miss (read from the store or waited for a refresh)",
      unit: "{lookup}",
    }),
    claimWaits: meter.createCounter("tokenvend.claim.waits", {
      description: "Refreshes that waited for another replica's claim on the same token",
      unit: "{refresh}",
    }),
    claimTakeovers: meter.createCounter("tokenvend.claim.takeovers", {
      description: "Expired refresh claims of a stopped replica taken over by this one",
      unit: "{claim}",
    }),
    unreadable: meter.createCounter("tokenvend.store.unreadable", {
      description:
        "Stored tokens that could not be opened (key missing, other key material, altered document), by reason",
      unit: "{read}",
    }),
    streams: meter.createObservableUpDownCounter("tokenvend.streams.active", {
      description: "WatchToken streams open on this replica",
      unit: "{stream}",
    }),
    watchers: meter.createObservableUpDownCounter("tokenvend.watchers.active", {
      description: "Tokens renewed in the background for streams on this replica (one per key)",
      unit: "{watcher}",
    }),
    cacheKeys: meter.createObservableUpDownCounter("tokenvend.cache.keys", {
      description: "Keys held in memory, by cache (tokens, exchanges); bounded by limits.cache",
      unit: "{key}",
    }),
    cacheBytes: meter.createObservableUpDownCounter("tokenvend.cache.bytes", {
      description: "Estimated bytes of the keys held in memory, by cache",
      unit: "By",
    }),
    cacheEvictions: meter.createCounter("tokenvend.cache.evictions", {
      description:
        "Keys dropped from memory, by cache and reason (capacity: pushed out by the bounds; idle)",
      unit: "{key}",
    }),
    refreshRefusals: meter.createCounter("tokenvend.refresh.refusals", {
      description:
        "Refreshes a caller's minimum validity asked for and did not get, by provider and reason (min_validity_unreachable, throttled)",
      unit: "{refresh}",
    }),
  };
}

export interface ProviderMetrics {
  readonly active: ObservableUpDownCounter;
  readonly queued: ObservableUpDownCounter;
  readonly shed: Counter;
  readonly queueDuration: Histogram;
  readonly pauses: Counter;
}

export function createProviderMetrics(meter: Meter): ProviderMetrics {
  return {
    active: meter.createObservableUpDownCounter("tokenvend.provider.requests.active", {
      description:
        "Requests in flight at each provider's endpoints (at most limits.providers.maxConcurrent)",
      unit: "{request}",
    }),
    queued: meter.createObservableUpDownCounter("tokenvend.provider.requests.queued", {
      description: "Requests (refreshes among them) waiting for a slot at their provider",
      unit: "{request}",
    }),
    shed: meter.createCounter("tokenvend.provider.requests.shed", {
      description:
        "Requests to a provider that never started, by reason (queue_full: shed at once; abandoned: their caller left the queue)",
      unit: "{request}",
    }),
    queueDuration: meter.createHistogram(
      "tokenvend.provider.queue.duration",
      seconds("Time a request waited for a slot at its provider"),
    ),
    pauses: meter.createCounter("tokenvend.provider.pauses", {
      description: "Pauses of every request to a provider after a 429 or 503 with Retry-After",
      unit: "{pause}",
    }),
  };
}

export interface LimitMetrics {
  readonly refusals: Counter;
  readonly held: ObservableGauge;
}

export function createLimitMetrics(meter: Meter): LimitMetrics {
  return {
    refusals: meter.createCounter("tokenvend.limits.refusals", {
      description:
        "Calls refused RESOURCE_EXHAUSTED by a per-caller limit, by limit (rate, streams, sessions, failures) and RPC method",
      unit: "{call}",
    }),
    held: meter.createObservableGauge("tokenvend.limits.refusals.held", {
      description:
        "Refusals by a per-caller limit held before they are answered (limits.callers.refusalHold)",
      unit: "{call}",
    }),
  };
}

export interface RpcMetrics {
  readonly callDuration: Histogram;
}

export function createRpcMetrics(meter: Meter): RpcMetrics {
  return {
    callDuration: meter.createHistogram(
      "rpc.server.call.duration",
      seconds("Duration of an incoming RPC, until its status is sent (streams: their whole life)"),
    ),
  };
}

export interface SweepMetrics {
  readonly runs: Counter;
  readonly removed: Counter;
}

export function createSweepMetrics(meter: Meter): SweepMetrics {
  return {
    runs: meter.createCounter("tokenvend.sweep.runs", {
      description: "Store sweeps run by this replica, by outcome (ok, error)",
      unit: "{sweep}",
    }),
    removed: meter.createCounter("tokenvend.sweep.removed", {
      description: "Old generations and dead claims removed by the sweeper, by kind",
      unit: "{document}",
    }),
  };
}

export interface FlowMetrics {
  readonly renewalFailures: Counter;
  readonly webhookDeliveries: Counter;
  readonly clientSecretSwitches: Counter;
}

export function createFlowMetrics(meter: Meter): FlowMetrics {
  return {
    renewalFailures: meter.createCounter("tokenvend.renewal.failures", {
      description:
        "Sessions whose token can no longer be renewed, by provider and outcome (REFRESH_FAILED, NO_REFRESH_TOKEN)",
      unit: "{session}",
    }),
    webhookDeliveries: meter.createCounter("tokenvend.webhook.deliveries", {
      description: "Failure webhook attempts, by provider and outcome (delivered, retry, gave_up)",
      unit: "{attempt}",
    }),
    clientSecretSwitches: meter.createCounter("tokenvend.client_secret.switches", {
      description: "Switches to a provider's next client secret after invalid_client, by provider",
      unit: "{switch}",
    }),
  };
}

/**
 * The configured limits, so alerts compare usage with them (streams near maxStreams) instead of
 * with a number copied into the rules.
 */
export function createServiceLimitMetrics(meter: Meter, limits: { maxStreams: number }): void {
  meter
    .createObservableGauge("tokenvend.streams.limit", {
      description: "maxStreams: the WatchToken streams this replica accepts",
      unit: "{stream}",
    })
    .addCallback((r) => r.observe(limits.maxStreams));
}

/** When the served TLS certificate expires, so an alert fires when rotation has stalled. */
export function createTlsMetrics(meter: Meter, notAfterMs: () => number): void {
  meter
    .createObservableGauge("tokenvend.tls.certificate.expiry", {
      description:
        "When the certificate the listeners serve expires, in seconds since the epoch (follows reloads)",
      unit: "s",
    })
    .addCallback((r) => r.observe(Math.floor(notAfterMs() / 1000)));
}

export const noopMeter: Meter = createNoopMeter();

/**
 * A meter that records on several meters at once: tokenvend's metrics go to the
 * Prometheus endpoint and to the OTLP exporter when both are configured.
 * Batch observable callbacks are not supported (tokenvend does not use them).
 */
export function teeMeter(meters: readonly Meter[]): Meter {
  if (meters.length === 1) return meters[0]!;
  type Adder = { add(v: number, a?: Attributes): void };
  type Recorder = { record(v: number, a?: Attributes): void };
  const fanAdd = <I extends Adder>(all: I[]) =>
    ({
      add(v: number, a?: Attributes) {
        for (const i of all) i.add(v, a);
      },
    }) as unknown as I;
  const fanRecord = <I extends Recorder>(all: I[]) =>
    ({
      record(v: number, a?: Attributes) {
        for (const i of all) i.record(v, a);
      },
    }) as unknown as I;
  const fanObservable = <O extends Observable>(all: O[]) =>
    ({
      addCallback(cb: ObservableCallback) {
        for (const o of all) o.addCallback(cb);
      },
      removeCallback(cb: ObservableCallback) {
        for (const o of all) o.removeCallback(cb);
      },
    }) as unknown as O;
  const unsupported = () => {
    throw new Error("teeMeter: batch observable callbacks are not supported");
  };
  return {
    createCounter: (n, o) => fanAdd<Counter>(meters.map((m) => m.createCounter(n, o))),
    createUpDownCounter: (n, o) =>
      fanAdd<UpDownCounter>(meters.map((m) => m.createUpDownCounter(n, o))),
    createHistogram: (n, o) => fanRecord<Histogram>(meters.map((m) => m.createHistogram(n, o))),
    createGauge: (n, o) => fanRecord<Gauge>(meters.map((m) => m.createGauge(n, o))),
    createObservableCounter: (n, o) =>
      fanObservable<ObservableCounter>(meters.map((m) => m.createObservableCounter(n, o))),
    createObservableUpDownCounter: (n, o) =>
      fanObservable<ObservableUpDownCounter>(
        meters.map((m) => m.createObservableUpDownCounter(n, o)),
      ),
    createObservableGauge: (n, o) =>
      fanObservable<ObservableGauge>(meters.map((m) => m.createObservableGauge(n, o))),
    addBatchObservableCallback: unsupported,
    removeBatchObservableCallback: unsupported,
  };
}
