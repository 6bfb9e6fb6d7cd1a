// Cache lookups by provider and result, counted with a plain increment on the
// hot path and reported when metrics are collected (an observable counter).

import type { Attributes, ObservableResult } from "@opentelemetry/api";
import { attr, type VendorMetrics } from "../telemetry/metrics.ts";

export interface LookupCounter {
  count(provider: string, hit: boolean): void;
  /** Stops reporting (the vendor closed). */
  close(): void;
}

interface Counts {
  readonly hit: Attributes;
  readonly miss: Attributes;
  hits: number;
  misses: number;
}

export function createLookupCounter(metrics: Pick<VendorMetrics, "cacheLookups">): LookupCounter {
  const byProvider = new Map<string, Counts>();
  const observe = (r: ObservableResult) => {
    for (const c of byProvider.values()) {
      r.observe(c.hits, c.hit);
      r.observe(c.misses, c.miss);
    }
  };
  metrics.cacheLookups.addCallback(observe);
  return {
    count(provider, hit) {
      let c = byProvider.get(provider);
      if (c === undefined) {
        c = {
          hit: { [attr.provider]: provider, [attr.cacheResult]: "hit" },
          miss: { [attr.provider]: provider, [attr.cacheResult]: "miss" },
          hits: 0,
          misses: 0,
        };
        byProvider.set(provider, c);
      }
      if (hit) c.hits++;
      else c.misses++;
    },
    close: () => metrics.cacheLookups.removeCallback(observe),
  };
}
