// The device authorization grant (RFC 8628) for headless callers: start asks the provider for a
// device and user code and returns what the user must see; this replica then polls the
// provider's token endpoint on its own, on the injected clock, every `interval` seconds (5 when
// the provider names none), 5 s more after each slow_down (§3.5), doubling the wait after a
// transient failure, until the user approves, refuses or the code expires.
//
// The pending authorization is a record `device:<key>` in the shared flow state store (the
// device code sealed); a new start for the same session replaces it, and the older poll stops.
// Approval stores the tokens as the session's next generation and removes the record; a refusal
// or expiry marks it failed. WatchToken on the session, on any replica, waits on that record
// (awaitLogin) and so delivers the first token, or ends with the failure.

import type { Random } from "./clock.ts";
import { notOwnerError, TokenVendError } from "./errors.ts";
import {
  flowError,
  flowTokenSet,
  type LoginFlowOptions,
  type LoginOwnership,
  ownedStore,
  ownershipFields,
  storeLogin,
} from "./flow-common.ts";
import { flowProvider } from "./flow-settings.ts";
import { type FlowRecord, fieldNumber, fieldText } from "./flow-state-store.ts";
import { errorText } from "./logger.ts";
import { keyId, sessionKey } from "./token.ts";
import { UpstreamError } from "./upstream.ts";

export interface StartedDeviceAuthorization {
  readonly userCode: string;
  readonly verificationUri: string;
  readonly verificationUriComplete: string | undefined;
  readonly expiresAt: number;
  readonly intervalSec: number;
}

export interface DeviceFlowOptions extends LoginFlowOptions {
  readonly random: Random;
}

export interface DeviceFlow {
  start(
    q: {
      sessionId: string;
      provider: string;
      scopes: readonly string[];
      /** Whose the session will be (authentication on). */
      ownership?: LoginOwnership | undefined;
    },
    signal?: AbortSignal,
  ): Promise<StartedDeviceAuthorization>;
  /**
   * Resolves once no device authorization of the session is pending (approved, or never
   * started); rejects with AUTHORIZATION_FAILED when it was refused or expired.
   */
  awaitLogin(sessionId: string, provider: string, signal: AbortSignal): Promise<void>;
  /** Polls in flight on this replica. */
  readonly polling: number;
}

/** RFC 8628 §3.5: the default interval, and what each slow_down adds. */
export const defaultIntervalMs = 5_000;
export const slowDownStepMs = 5_000;
const maxTransientWaitMs = 60_000;
/** How long a refused or expired authorization stays readable for watchers. */
const failedKeepMs = 60_000;

const recordId = (sessionId: string, provider: string) =>
  `device:${keyId(sessionKey(sessionId, provider))}`;

export function createDeviceFlow(opts: DeviceFlowOptions): DeviceFlow {
  const { states, clock, logger: log } = opts;
  let polling = 0;
  let starts = 0;

  const fail = async (record: FlowRecord, oauthError: string) => {
    log.warn(
      { provider: fieldText(record, "provider"), oauthError },
      "device authorization failed",
    );
    await states
      .replace({
        ...record,
        expiresAt: clock.now() + failedKeepMs,
        fields: { ...record.fields, status: "failed", error: oauthError },
      })
      .catch(() => {});
  };

  const poll = async (record: FlowRecord) => {
    const provider = fieldText(record, "provider");
    const sessionId = fieldText(record, "sessionId");
    const attempt = fieldText(record, "attempt");
    let waitMs = fieldNumber(record, "intervalMs") ?? defaultIntervalMs;
    let transientWaitMs = waitMs;
    for (;;) {
      await clock.sleep(waitMs, opts.signal).catch(() => {});
      if (opts.signal.aborted) return;
      const current = await states.get(record.id).catch(() => record);
      if (current === undefined || fieldText(current, "attempt") !== attempt) return;
      if (clock.now() >= record.expiresAt) return fail(record, "expired_token");
      try {
        const startedAt = clock.now();
        const res = await opts.upstream.pollDevice(provider, {
          signal: AbortSignal.any([opts.signal, AbortSignal.timeout(opts.upstreamTimeoutMs)]),
          deviceCode: record.secrets.deviceCode ?? "",
        });
        const p = flowProvider(opts.providers, provider);
        const tokens = flowTokenSet(res, startedAt, opts.lifetimeOf(provider), p.clientId);
        // The device code is spent: a refusal now is final, never a reason to poll again.
        let generation: number | undefined;
        try {
          generation = await storeLogin(opts, ownedStore(record, { sessionId, provider, tokens }));
        } catch (err) {
          log.error({ provider, err: errorText(err) }, "a device login could not be stored");
          return fail(record, "session_not_stored");
        }
        if (generation === undefined) return;
        await states.remove(record.id).catch(() => {});
        log.info({ provider, generation }, "device authorization completed");
        return;
      } catch (err) {
        if (opts.signal.aborted) return;
        const up = err instanceof UpstreamError ? err : undefined;
        const code = up?.oauthError;
        if (code === "authorization_pending") continue;
        if (code === "slow_down") {
          waitMs += slowDownStepMs;
          continue;
        }
        // access_denied, expired_token, invalid_grant…: the provider has decided.
        const answered = up?.status !== undefined && up.status < 500 && up.status !== 429;
        if (code !== undefined && answered) return fail(record, code);
        // No answer, 5xx, 429 or a store failure: wait longer and poll again (§3.5).
        transientWaitMs = Math.min(Math.max(transientWaitMs, waitMs) * 2, maxTransientWaitMs);
        log.warn(
          { provider, retryInMs: transientWaitMs, err: errorText(err) },
          "device poll failed",
        );
        await clock.sleep(transientWaitMs - waitMs, opts.signal).catch(() => {});
        if (opts.signal.aborted) return;
      }
    }
  };

  return {
    async start(q, signal) {
      const p = flowProvider(opts.providers, q.provider);
      const scopes = q.scopes.length > 0 ? q.scopes : p.authorizationScopes;
      const res = await opts.upstream
        .startDevice(q.provider, {
          signal: AbortSignal.any([opts.signal, AbortSignal.timeout(opts.upstreamTimeoutMs)]),
          scopes,
        })
        .catch((err: unknown) => {
          throw flowError(err, q.provider, "the device authorization");
        });
      const intervalMs = (res.intervalSec ?? defaultIntervalMs / 1000) * 1000;
      const expiresAt = clock.now() + res.expiresInSec * 1000;
      const record: FlowRecord = {
        id: recordId(q.sessionId, q.provider),
        expiresAt,
        fields: {
          kind: "device",
          sessionId: q.sessionId,
          provider: q.provider,
          status: "pending",
          intervalMs,
          ...ownershipFields(q.ownership),
          // Unique per start: a random part for other replicas, a count for this one.
          attempt: `${Math.floor(opts.random() * 2 ** 48).toString(36)}.${++starts}`,
        },
        secrets: { deviceCode: res.deviceCode },
      };
      // A newer start replaces a pending one (the older poll sees another attempt and stops),
      // but only one the caller may replace: not another owner's pending login.
      const prior = await states.get(record.id, { signal });
      const owner = q.ownership?.owner;
      if (
        prior !== undefined &&
        owner !== undefined &&
        fieldText(prior, "status") === "pending" &&
        prior.expiresAt > clock.now() &&
        ![owner, ""].includes(fieldText(prior, "recordOwner"))
      ) {
        throw notOwnerError();
      }
      await states.remove(record.id, { signal });
      if (!(await states.create(record, { signal }))) {
        throw new TokenVendError(
          "INVALID_STATE",
          "another device authorization of this session started at the same time",
        );
      }
      polling++;
      void poll(record)
        .catch((err: unknown) => log.error({ err: errorText(err) }, "device poll stopped"))
        .finally(() => polling--);
      return {
        userCode: res.userCode,
        verificationUri: res.verificationUri,
        verificationUriComplete: res.verificationUriComplete,
        expiresAt,
        intervalSec: intervalMs / 1000,
      };
    },

    async awaitLogin(sessionId, provider, signal) {
      for (;;) {
        const record = await states.get(recordId(sessionId, provider), { signal });
        if (record === undefined) return;
        if (fieldText(record, "status") === "failed") {
          const code = fieldText(record, "error");
          throw new TokenVendError(
            "AUTHORIZATION_FAILED",
            `the device authorization at provider "${provider}" failed: ${code}`,
            { metadata: { oauth_error: code } },
          );
        }
        if (record.expiresAt <= clock.now()) return;
        await clock.sleep(Math.min(fieldNumber(record, "intervalMs") ?? 1000, 1000), signal);
      }
    },

    get polling() {
      return polling;
    },
  };
}
