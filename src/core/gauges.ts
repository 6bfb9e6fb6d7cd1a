// The numbers the core reports as observable instruments (streams, watchers, a key cache's keys
// and bytes), read only when metrics are collected, and a key cache's eviction counter.

import type { Attributes, Observable, ObservableResult } from "@opentelemetry/api";
import { attr, type VendorMetrics } from "../telemetry/metrics.ts";
import type { EvictionReason, KeyCache } from "./key-cache.ts";

type Gauge = readonly [Observable, () => number, Attributes?];

/** Reports each gauge's value at every collection; returns the function that stops it. */
export function observeGauges(gauges: readonly Gauge[]): () => void {
  const callbacks = gauges.map(([instrument, read, attributes]) => {
    const cb = (r: ObservableResult) => r.observe(read(), attributes);
    instrument.addCallback(cb);
    return [instrument, cb] as const;
  });
  return () => {
    for (const [instrument, cb] of callbacks) instrument.removeCallback(cb);
  };
}

/** A key cache's size gauges and, for its onEvict, its eviction counter, under its name. */
export function cacheInstruments(metrics: VendorMetrics, name: "tokens" | "exchanges") {
  const attributes = { [attr.cache]: name };
  return {
    onEvict: (reason: EvictionReason) =>
      metrics.cacheEvictions.add(1, { ...attributes, [attr.evictionReason]: reason }),
    gauges: (cache: KeyCache): Gauge[] => [
      [metrics.cacheKeys, () => cache.size, attributes],
      [metrics.cacheBytes, () => cache.bytes, attributes],
    ],
  };
}
