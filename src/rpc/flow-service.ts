// The handlers of the flows tokenvend runs itself (StartAuthorization, CompleteAuthorization,
// StartDeviceAuthorization, ExchangeToken), merged into the one TokenService implementation both
// listeners mount (server.ts): proto -> validated domain input -> core -> proto. Nothing they
// return carries a refresh token.

import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  CompleteAuthorizationResponseSchema,
  ExchangeTokenResponseSchema,
  StartAuthorizationResponseSchema,
  StartDeviceAuthorizationResponseSchema,
  type TokenService,
} from "../../gen/tokenvend/v1/token_service_pb.js";
import type { Flows } from "../core/flows.ts";
import { accessOf } from "./access.ts";
import { exchangeTarget, ownedExchange } from "./exchange-target.ts";
import { type FlowMethods, toCredential } from "./token-service.ts";
import { limits, Violations } from "./validate.ts";

export interface FlowServiceOptions {
  /** Behind the access control (access-control.ts): logins and exchanges are owned as it decided. */
  readonly guarded?: boolean;
}

export function createFlowService(
  flows: Flows,
  opts: FlowServiceOptions = {},
): Pick<ServiceImpl<typeof TokenService>, FlowMethods> {
  const guarded = opts.guarded === true;
  /** Whose a login's session will be, and whose session it may replace. */
  const ownership = (ctx: HandlerContext) => {
    const a = accessOf(ctx, guarded);
    return { recordOwner: a.recordOwner, owner: a.owner };
  };
  return {
    async startAuthorization(req, ctx) {
      new Violations()
        .sessionId("session_id", req.sessionId)
        .name("provider", req.provider)
        .url("redirect_uri", req.redirectUri, true)
        .scopes("scopes", req.scopes)
        .text("login_hint", req.loginHint, limits.bindingMaxChars)
        .text("prompt", req.prompt, limits.bindingMaxChars)
        .check();
      const res = await flows.authorization.start(
        {
          sessionId: req.sessionId,
          provider: req.provider,
          redirectUri: req.redirectUri,
          scopes: req.scopes,
          loginHint: req.loginHint || undefined,
          prompt: req.prompt || undefined,
          ownership: ownership(ctx),
        },
        ctx.signal,
      );
      return create(StartAuthorizationResponseSchema, {
        authorizationUrl: res.url,
        state: res.state,
        expiresAt: timestampFromMs(res.expiresAt),
      });
    },

    async completeAuthorization(req, ctx) {
      const v = new Violations().token("state", req.state, req.response.case !== "callbackUrl");
      const r = req.response;
      if (r.case === "callbackUrl") v.url("callback_url", r.value, true);
      else if (r.case === "code") v.token("code", r.value, true);
      else v.add("response", "set callback_url or code");
      v.check();
      const res = await flows.authorization.complete(
        {
          state: req.state,
          ...(r.case === "callbackUrl" ? { callbackUrl: r.value } : {}),
          ...(r.case === "code" ? { code: r.value } : {}),
          ownership: ownership(ctx),
        },
        ctx.signal,
      );
      return create(CompleteAuthorizationResponseSchema, {
        sessionId: res.sessionId,
        provider: res.provider,
        generation: BigInt(res.generation),
        scopes: [...res.scopes],
        subject: res.subject ?? "",
        expiresAt: timestampFromMs(res.expiresAt),
      });
    },

    async startDeviceAuthorization(req, ctx) {
      new Violations()
        .sessionId("session_id", req.sessionId)
        .name("provider", req.provider)
        .scopes("scopes", req.scopes)
        .check();
      const res = await flows.device.start(
        {
          sessionId: req.sessionId,
          provider: req.provider,
          scopes: req.scopes,
          ownership: ownership(ctx),
        },
        ctx.signal,
      );
      return create(StartDeviceAuthorizationResponseSchema, {
        userCode: res.userCode,
        verificationUri: res.verificationUri,
        verificationUriComplete: res.verificationUriComplete ?? "",
        expiresAt: timestampFromMs(res.expiresAt),
        intervalSeconds: Math.ceil(res.intervalSec),
      });
    },

    async exchangeToken(req, ctx) {
      const v = new Violations().minValidity("min_validity_seconds", req.minValiditySeconds);
      const target = ownedExchange(
        exchangeTarget(req.target, v, "target."),
        accessOf(ctx, guarded),
      );
      v.check();
      const res = await flows.exchanges.get(target, req.minValiditySeconds * 1000, ctx.signal);
      return create(ExchangeTokenResponseSchema, {
        credential: toCredential(res.record),
        issuedTokenType: res.issuedTokenType,
      });
    },
  };
}
