// A refresh, counted and timed by provider, grant type, outcome and source, and,
// when tracing, run in a `tokenvend.refresh` span: a child of the waiting
// caller's span, or a trace of its own for a background renewal (and for a
// stale-while-revalidate refresh, linked from the call that started it). Only
// @opentelemetry/api is used; without a tracer no span is made.

import {
  type Attributes,
  type Span,
  type SpanContext,
  SpanKind,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { type DescribeError, instrument } from "../telemetry/instrument.ts";
import {
  attr,
  type RefreshOutcome,
  type RefreshSource,
  type RefreshTrigger,
  type VendorMetrics,
} from "../telemetry/metrics.ts";
import type { Clock } from "./clock.ts";
import { isTokenVendError } from "./errors.ts";
import type { KeyEntry } from "./key-cache.ts";
import type { LiveRecord } from "./token.ts";
import { UpstreamError } from "./upstream.ts";

/** Where a refresh got its token; the refresh sets it. */
export interface RefreshInfo {
  source: RefreshSource;
}

export interface RefreshTelemetry {
  /** The span active in the caller (its server span), when tracing. */
  activeSpan(): Span | undefined;
  /**
   * Runs `fn`, the refresh of `entry`, measured; `onSpan` gets the refresh's
   * span context for the callers that wait on it to link to.
   */
  measure(
    entry: KeyEntry,
    trigger: RefreshTrigger,
    onSpan: (span: SpanContext) => void,
    fn: (info: RefreshInfo) => Promise<LiveRecord>,
  ): Promise<LiveRecord>;
}

export function createRefreshTelemetry(opts: {
  readonly tracer: Tracer | undefined;
  readonly metrics: VendorMetrics;
  readonly clock: Clock;
  /** The grant type a key is renewed with, for attributes (default: by key kind). */
  readonly grantTypeOf?: (entry: KeyEntry) => string;
}): RefreshTelemetry {
  const { tracer, metrics, clock } = opts;
  const activeSpan = (): Span | undefined =>
    tracer !== undefined ? trace.getActiveSpan() : undefined;
  return {
    activeSpan,
    measure(entry, trigger, onSpan, fn) {
      const info: RefreshInfo = { source: "provider" };
      const grantType =
        opts.grantTypeOf?.(entry) ??
        (entry.key.kind === "grant" ? "client_credentials" : "refresh_token");
      const startedAt = clock.now();
      const done = (outcome: RefreshOutcome) => {
        const a: Attributes = {
          [attr.provider]: entry.provider,
          [attr.grantType]: grantType,
          [attr.outcome]: outcome,
          ...(outcome === "success" ? { [attr.source]: info.source } : {}),
        };
        metrics.refreshes.add(1, a);
        metrics.refreshDuration.record(Math.max(0, clock.now() - startedAt) / 1000, a);
      };
      const caller = activeSpan();
      const run =
        tracer === undefined
          ? fn(info)
          : instrument(
              tracer,
              "tokenvend.refresh",
              {
                kind: SpanKind.INTERNAL,
                attributes: {
                  [attr.provider]: entry.provider,
                  [attr.grantType]: grantType,
                  [attr.attempt]: entry.refresh.failures + 1,
                  [attr.trigger]: trigger,
                  ...(entry.key.kind === "grant" ? { [attr.grant]: entry.key.grant } : {}),
                },
                ...(trigger === "caller" ? {} : { root: true }),
                ...(trigger === "revalidate" && caller !== undefined
                  ? { links: [{ context: caller.spanContext() }] }
                  : {}),
                describeError: describeRefreshError,
              },
              async (span) => {
                onSpan(span.spanContext());
                const r = await fn(info);
                span.setAttributes({
                  [attr.outcome]: "success",
                  [attr.source]: info.source,
                  [attr.generation]: r.generation,
                });
                return r;
              },
            );
      return run.then(
        (r) => {
          done("success");
          return r;
        },
        (err: unknown) => {
          done(refreshOutcomeOf(err));
          throw err;
        },
      );
    },
  };
}

function refreshOutcomeOf(err: unknown): RefreshOutcome {
  if (!isTokenVendError(err)) return "error";
  switch (err.code) {
    case "REFRESH_FAILED":
      return "rejected";
    case "NO_REFRESH_TOKEN":
      return "no_refresh_token";
    case "UPSTREAM_UNAVAILABLE":
      return "unavailable";
    case "STORE_UNAVAILABLE":
      return "store_unavailable";
    case "SESSION_NOT_FOUND":
    case "GRANT_NOT_FOUND":
      return "not_found";
    default:
      return "error";
  }
}

/**
 * A failed refresh is an error on its span, with the domain code and message
 * (factual, free of secrets) and the provider's OAuth error code; a token that
 * was revoked meanwhile (not found) is an outcome, not a fault.
 */
const describeRefreshError: DescribeError = (err) => {
  const outcome = refreshOutcomeOf(err);
  const cause = isTokenVendError(err) ? err.cause : undefined;
  const oauthError = cause instanceof UpstreamError ? cause.oauthError : undefined;
  return {
    type: isTokenVendError(err) ? err.code : "INTERNAL",
    message: isTokenVendError(err) ? err.message : undefined,
    expected: outcome === "not_found",
    attributes: {
      [attr.outcome]: outcome,
      ...(oauthError !== undefined ? { [attr.oauthError]: oauthError } : {}),
    },
  };
};
