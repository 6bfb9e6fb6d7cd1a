// When a session's token can no longer be renewed (the provider rejected its refresh token, it
// was revoked there, or there is none), the application should ask its user to log in again.
// Each such failure is counted (tokenvend.renewal.failures), logged, and, when the provider has
// a webhook, posted to it as a signed JSON event (Standard Webhooks: HMAC-SHA256 over id,
// timestamp and body; the delivery port signs), retried with the backoff policy (exponential,
// jittered, capped) until a 2xx or maxAttempts. The event id is derived from (session,
// provider, generation): a receiver that sees it twice (two replicas saw the same failure) can
// drop the second. Every replica reports what it saw; nothing here waits on a caller.

import { createHash } from "node:crypto";
import type { Counter } from "@opentelemetry/api";
import { attr } from "../telemetry/metrics.ts";
import { type BackoffPolicy, backoffDelayMs } from "./backoff.ts";
import type { Clock, Random } from "./clock.ts";
import type { TokenVendError } from "./errors.ts";
import type { FlowProviders, WebhookSettings } from "./flow-settings.ts";
import { errorText, type Logger } from "./logger.ts";
import { UpstreamError } from "./upstream.ts";

export interface RenewalFailureEvent {
  readonly type: "session.renewal_failed";
  readonly session_id: string;
  readonly provider: string;
  /** REFRESH_FAILED or NO_REFRESH_TOKEN. */
  readonly reason: string;
  /** The provider's OAuth error (invalid_grant: revoked or expired there), when it sent one. */
  readonly oauth_error?: string;
  /** The generation whose renewal failed. */
  readonly generation: number;
  /** RFC 3339. */
  readonly occurred_at: string;
}

/** Posts one signed delivery; resolves with the HTTP status, rejects when no answer came. */
export type WebhookDeliver = (
  hook: WebhookSettings,
  msg: { readonly id: string; readonly timestampMs: number; readonly body: string },
  signal: AbortSignal,
) => Promise<number>;

export interface RenewalFailuresOptions {
  readonly providers: FlowProviders;
  readonly deliver: WebhookDeliver;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  readonly backoff: BackoffPolicy;
  readonly maxAttempts: number;
  readonly timeoutMs: number;
  readonly failures: Counter;
  readonly deliveries: Counter;
}

export interface RenewalFailures {
  report(f: { sessionId: string; provider: string; generation: number }, err: TokenVendError): void;
  /** Deliveries still being tried. */
  readonly pending: number;
}

/** Failures already reported by this replica, by event id; old ones are forgotten first. */
const rememberMax = 10_000;

export function createRenewalFailures(opts: RenewalFailuresOptions): RenewalFailures {
  const { clock, logger: log } = opts;
  const seen = new Set<string>();
  let pending = 0;

  const post = async (provider: string, hook: WebhookSettings, id: string, body: string) => {
    for (let attempt = 1; ; attempt++) {
      const timestampMs = clock.now();
      let status: number | undefined;
      try {
        status = await opts.deliver(
          hook,
          { id, timestampMs, body },
          AbortSignal.any([opts.signal, AbortSignal.timeout(opts.timeoutMs)]),
        );
      } catch (err) {
        if (opts.signal.aborted) return;
        log.warn({ provider, attempt, err: errorText(err) }, "webhook delivery failed");
      }
      const ok = status !== undefined && status >= 200 && status < 300;
      const outcome = ok ? "delivered" : attempt >= opts.maxAttempts ? "gave_up" : "retry";
      opts.deliveries.add(1, { [attr.provider]: provider, [attr.webhookOutcome]: outcome });
      if (ok) return;
      if (outcome === "gave_up") {
        log.error({ provider, attempts: attempt, status }, "webhook delivery gave up");
        return;
      }
      const delay = backoffDelayMs(attempt, opts.backoff, opts.random, undefined);
      log.warn({ provider, attempt, status, retryInMs: delay }, "webhook delivery will be retried");
      await clock.sleep(delay, opts.signal);
    }
  };

  return {
    report(f, err) {
      const cause = err.cause instanceof UpstreamError ? err.cause.oauthError : undefined;
      const id = `evt_${createHash("sha256")
        .update(`${f.provider}\u001f${f.sessionId}\u001f${f.generation}`)
        .digest("base64url")
        .slice(0, 32)}`;
      if (seen.has(id)) return;
      seen.add(id);
      if (seen.size > rememberMax) seen.delete(seen.values().next().value as string);
      opts.failures.add(1, { [attr.provider]: f.provider, [attr.failureReason]: err.code });
      log.warn(
        { provider: f.provider, reason: err.code, oauthError: cause, eventId: id },
        "session can no longer be renewed",
      );
      const hook = opts.providers.get(f.provider)?.webhook;
      if (hook === undefined) return;
      const event: RenewalFailureEvent = {
        type: "session.renewal_failed",
        session_id: f.sessionId,
        provider: f.provider,
        reason: err.code,
        ...(cause !== undefined ? { oauth_error: cause } : {}),
        generation: f.generation,
        occurred_at: new Date(clock.now()).toISOString(),
      };
      pending++;
      void post(f.provider, hook, id, JSON.stringify(event))
        .catch(() => {})
        .finally(() => pending--);
    },
    get pending() {
      return pending;
    },
  };
}
