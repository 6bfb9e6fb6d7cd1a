// The TokenService handlers, written once and mounted on both listeners:
// proto -> validated domain input -> core -> proto. They throw domain errors;
// the listeners map them for the wire (error-mapping.ts, given in server.ts).

import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type Credential,
  CredentialSchema,
  GetAllUpstreamCredentialsResponseSchema,
  type GetTokenResponse,
  GetTokenResponseSchema,
  type GetValidTokensResponse,
  GetValidTokensResponseSchema,
  RenewalReason,
  RevokeSessionResponseSchema,
  StoreUpstreamTokensResponseSchema,
  type TokenService,
  type WatchTokenRequest,
  type WatchTokenResponse,
  WatchTokenResponseSchema,
} from "../../gen/tokenvend/v1/token_service_pb.js";
import type { Clock } from "../core/clock.ts";
import { systemClock } from "../core/clock.ts";
import type { LiveRecord, TokenSet } from "../core/token.ts";
import type { TokenExchanges } from "../core/token-exchange.ts";
import type { WatchEvent, WatchReason, WatchTarget } from "../core/token-stream.ts";
import type { TokenVendor } from "../core/token-vendor.ts";
import { freeze, pushStream, type StreamSink } from "../transport/index.ts";
import { accessOf } from "./access.ts";
import { newSessionKey } from "./access-limits.ts";
import { exchangeTarget, ownedExchange } from "./exchange-target.ts";
import { limits, Violations } from "./validate.ts";

export interface TokenServiceOptions {
  readonly vendor: TokenVendor;
  readonly clock?: Clock;
  /** Streams of exchanged tokens (WatchToken's `exchange` target). */
  readonly exchanges?: Pick<TokenExchanges, "watch">;
  /**
   * The handlers run behind the access control (rpc/access-control.ts), which
   * decides the owners: read them from the call's context. False: nothing is
   * owned, and the hot path does not touch the context's values.
   */
  readonly guarded?: boolean;
}

/** The flows' methods, implemented in flow-service.ts. */
export type FlowMethods =
  | "startAuthorization"
  | "completeAuthorization"
  | "startDeviceAuthorization"
  | "exchangeToken";

const reasons: Record<WatchReason, RenewalReason> = {
  initial: RenewalReason.INITIAL,
  refreshed: RenewalReason.REFRESHED,
  stored: RenewalReason.STORED,
};

// One Credential, and one response of each kind, per generation: the hot path
// maps a record to proto once (and the gRPC listener encodes it once).
const credentials = new WeakMap<LiveRecord, Credential>();
const validResponses = new WeakMap<LiveRecord, GetValidTokensResponse>();
const tokenResponses = new WeakMap<LiveRecord, GetTokenResponse>();

function memo<R>(cache: WeakMap<LiveRecord, R>, r: LiveRecord, make: () => R): R {
  let v = cache.get(r);
  if (v === undefined) {
    v = make();
    cache.set(r, v);
  }
  return v;
}

export function toCredential(r: LiveRecord): Credential {
  let c = credentials.get(r);
  if (c === undefined) {
    const t = r.tokens;
    c = create(CredentialSchema, {
      accessToken: t.accessToken,
      idToken: t.idToken ?? "",
      tokenType: t.tokenType,
      expiresAt: timestampFromMs(t.expiresAt),
      scopes: [...t.scopes],
      generation: BigInt(r.generation),
    });
    credentials.set(r, c);
  }
  return c;
}

export function createTokenService(
  opts: TokenServiceOptions,
): Omit<ServiceImpl<typeof TokenService>, FlowMethods> {
  const { vendor } = opts;
  const guarded = opts.guarded === true;
  const clock = opts.clock ?? systemClock;

  return {
    async storeUpstreamTokens(req, ctx) {
      const v = new Violations()
        .sessionId("session_id", req.sessionId)
        .name("provider", req.provider)
        .token("access_token", req.accessToken, true)
        .token("refresh_token", req.refreshToken, false)
        .token("id_token", req.idToken, false)
        .scopes("scopes", req.scopes)
        .text("subject", req.subject, limits.bindingMaxChars)
        .text("client_id", req.clientId, limits.bindingMaxChars)
        .typeName("token_type", req.tokenType);
      const access = accessOf(ctx, guarded);
      const now = clock.now();
      let expiresAt = Number.NaN;
      const e = req.expiry;
      if (e.case === "expiresIn") {
        if (e.value <= 0n || e.value > BigInt(limits.maxLifetimeSec)) {
          v.add("expires_in", `must be 1 to ${limits.maxLifetimeSec} seconds`);
        } else expiresAt = now + Number(e.value) * 1000;
      } else if (e.case === "expiresAt") {
        expiresAt = v.instant("expires_at", e.value, now, limits.maxLifetimeSec * 1000);
      } else {
        v.add("expiry", "set expires_at or expires_in");
      }
      v.check();
      const tokens: TokenSet = {
        accessToken: req.accessToken,
        refreshToken: req.refreshToken || undefined,
        idToken: req.idToken || undefined,
        tokenType: req.tokenType || "Bearer",
        scopes: req.scopes,
        issuedAt: Math.min(now, expiresAt),
        expiresAt,
        subject: req.subject || undefined,
        clientId: req.clientId || undefined,
        owner: access.recordOwner,
      };
      const generation = await vendor.storeUpstreamTokens(
        {
          sessionId: req.sessionId,
          provider: req.provider,
          tokens,
          owner: access.owner,
          admitNewKey: ctx.values.get(newSessionKey),
        },
        ctx.signal,
      );
      return create(StoreUpstreamTokensResponseSchema, { generation: BigInt(generation) });
    },

    async getValidTokens(req, ctx) {
      new Violations()
        .sessionId("session_id", req.sessionId)
        .name("provider", req.provider)
        .text("expected_subject", req.expectedSubject, limits.bindingMaxChars)
        .text("expected_client_id", req.expectedClientId, limits.bindingMaxChars)
        .minValidity("min_validity_seconds", req.minValiditySeconds)
        .check();
      const r = await vendor.getValidTokens(
        {
          sessionId: req.sessionId,
          provider: req.provider,
          expectedSubject: req.expectedSubject,
          expectedClientId: req.expectedClientId,
          minValidityMs: req.minValiditySeconds * 1000,
          owner: accessOf(ctx, guarded).owner,
        },
        ctx.signal,
      );
      return memo(validResponses, r, () =>
        freeze(create(GetValidTokensResponseSchema, { credential: toCredential(r) })),
      );
    },

    async getAllUpstreamCredentials(req, ctx) {
      new Violations().sessionId("session_id", req.sessionId).check();
      const access = accessOf(ctx, guarded);
      const res = await vendor.getAllUpstreamCredentials(req.sessionId, ctx.signal, {
        owner: access.owner,
        expectedClientId: access.expectedClientId,
        providers: access.providers,
      });
      const out = create(GetAllUpstreamCredentialsResponseSchema, {
        failures: res.failures.map((f) => ({
          provider: f.provider,
          reason: f.code,
          message: f.message,
        })),
      });
      for (const [provider, r] of res.credentials) out.credentials[provider] = toCredential(r);
      return out;
    },

    async getToken(req, ctx) {
      new Violations()
        .name("grant", req.grant)
        .minValidity("min_validity_seconds", req.minValiditySeconds)
        .check();
      const r = await vendor.getToken(req.grant, req.minValiditySeconds * 1000, ctx.signal);
      return memo(tokenResponses, r, () =>
        freeze(create(GetTokenResponseSchema, { credential: toCredential(r) })),
      );
    },

    watchToken: pushStream(
      (req: WatchTokenRequest, ctx: HandlerContext, sink: StreamSink<WatchTokenResponse>) => {
        const listener = {
          next: (ev: WatchEvent) => sink.send(toWatchResponse(ev.record, ev.reason)),
          end: (err: Error | undefined) => sink.end(err),
        };
        if (req.target.case === "exchange" && opts.exchanges !== undefined) {
          const v = new Violations();
          const target = ownedExchange(
            exchangeTarget(req.target.value, v, "exchange."),
            accessOf(ctx, guarded),
          );
          v.check();
          opts.exchanges.watch(target, listener, ctx.signal);
          return;
        }
        vendor.watch(watchTarget(req, accessOf(ctx, guarded).owner), listener, ctx.signal);
      },
    ),

    async revokeSession(req, ctx) {
      const v = new Violations().sessionId("session_id", req.sessionId);
      if (req.provider !== "") v.name("provider", req.provider);
      v.check();
      const res = await vendor.revokeSession(
        {
          sessionId: req.sessionId,
          provider: req.provider || undefined,
          revokeUpstream: req.revokeUpstream,
          owner: accessOf(ctx, guarded).owner,
        },
        ctx.signal,
      );
      return create(RevokeSessionResponseSchema, {
        revokedProviders: res.revokedProviders,
        upstreamFailures: res.upstreamFailures.map((f) => ({
          provider: f.provider,
          reason: f.code,
          message: f.message,
        })),
      });
    },
  };
}

/** The validated target of a WatchToken request; throws INVALID_ARGUMENT. */
function watchTarget(req: WatchTokenRequest, owner: string | undefined): WatchTarget {
  const t = req.target;
  const v = new Violations();
  let target: WatchTarget;
  if (t.case === "session") {
    const s = t.value;
    v.sessionId("session.session_id", s.sessionId)
      .name("session.provider", s.provider)
      .text("session.expected_subject", s.expectedSubject, limits.bindingMaxChars)
      .text("session.expected_client_id", s.expectedClientId, limits.bindingMaxChars);
    target = {
      kind: "session",
      sessionId: s.sessionId,
      provider: s.provider,
      expectedSubject: s.expectedSubject,
      expectedClientId: s.expectedClientId,
      owner,
    };
  } else if (t.case === "grant") {
    v.name("grant", t.value);
    target = { kind: "grant", grant: t.value };
  } else {
    v.add("target", "set session or grant");
    target = { kind: "grant", grant: "" };
  }
  v.check();
  return target;
}

// One frozen stream message per (generation, reason): a renewal pushed to 10,000
// streams is built and encoded once, not once per stream.
const watchResponses = new WeakMap<LiveRecord, Partial<Record<WatchReason, WatchTokenResponse>>>();

function toWatchResponse(r: LiveRecord, reason: WatchReason): WatchTokenResponse {
  const byReason = memo(
    watchResponses,
    r,
    (): Partial<Record<WatchReason, WatchTokenResponse>> => ({}),
  );
  byReason[reason] ??= freeze(
    create(WatchTokenResponseSchema, { credential: toCredential(r), reason: reasons[reason] }),
  );
  return byReason[reason];
}
