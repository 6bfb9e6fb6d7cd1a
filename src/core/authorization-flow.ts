// The authorization code flow with PKCE, run by tokenvend so the refresh token never leaves it.
//
// start: the redirect URI must be on the provider's allow-list; the provider side makes a fresh
// state, PKCE verifier and (for OpenID Connect) nonce; the verifier and nonce are stored, sealed,
// under a hash of the state (record `auth:<sha256(state)>`), expiring after stateTtlMs, in the
// flow state store every replica shares. Only the URL and the state go back to the caller.
//
// complete: one use per state, decided by an insert (`used:<sha256(state)>`, which exactly one
// caller creates); an unknown, expired or already used state is INVALID_STATE. The code is
// redeemed at the provider (callback and ID token validated there) and the tokens stored as the
// session's next generation; the caller gets the generation and the scopes, never a token.

import { abandonWait } from "./abandon-wait.ts";
import { invalidArgument, notOwnerError, TokenVendError } from "./errors.ts";
import {
  flowError,
  flowTokenSet,
  handleId,
  type LoginFlowOptions,
  type LoginOwnership,
  ownedStore,
  ownershipFields,
  storeLogin,
} from "./flow-common.ts";
import { flowProvider } from "./flow-settings.ts";
import { type FlowRecord, fieldList, fieldText } from "./flow-state-store.ts";

export interface StartAuthorizationInput {
  readonly sessionId: string;
  readonly provider: string;
  readonly redirectUri: string;
  readonly scopes: readonly string[];
  readonly loginHint?: string | undefined;
  readonly prompt?: string | undefined;
  /** Whose the session will be (authentication on). */
  readonly ownership?: LoginOwnership | undefined;
}

export interface StartedAuthorization {
  readonly url: string;
  readonly state: string;
  readonly expiresAt: number;
}

export interface CompleteAuthorizationInput {
  /** May be empty with callbackUrl (the URL carries it). */
  readonly state: string;
  readonly callbackUrl?: string | undefined;
  readonly code?: string | undefined;
  /** The completing call's ownership: a state started by another owner is NOT_OWNER. */
  readonly ownership?: LoginOwnership | undefined;
}

export interface CompletedAuthorization {
  readonly sessionId: string;
  readonly provider: string;
  readonly generation: number;
  readonly scopes: readonly string[];
  readonly subject: string | undefined;
  readonly expiresAt: number;
}

export interface AuthorizationFlowOptions extends LoginFlowOptions {
  readonly stateTtlMs: number;
}

export interface AuthorizationFlow {
  start(q: StartAuthorizationInput, signal?: AbortSignal): Promise<StartedAuthorization>;
  complete(q: CompleteAuthorizationInput, signal?: AbortSignal): Promise<CompletedAuthorization>;
}

const invalidState = (why: string) =>
  new TokenVendError(
    "INVALID_STATE",
    `the authorization state is ${why}: start the authorization again`,
  );

export function createAuthorizationFlow(opts: AuthorizationFlowOptions): AuthorizationFlow {
  const { states, clock } = opts;
  const upstreamSignal = () =>
    AbortSignal.any([opts.signal, AbortSignal.timeout(opts.upstreamTimeoutMs)]);

  /** The one caller that gets here with a state owns its record; everyone else: INVALID_STATE. */
  const take = async (
    state: string,
    ownership: LoginOwnership | undefined,
    signal: AbortSignal | undefined,
  ): Promise<FlowRecord> => {
    const id = handleId("auth", state);
    const used = handleId("used", state);
    const record = await states.get(id, { signal });
    if (record === undefined) {
      throw invalidState((await states.get(used, { signal })) ? "already used" : "unknown");
    }
    if (record.expiresAt <= clock.now()) throw invalidState("expired");
    // A state is a capability of the caller that started it, not of whoever holds it; another
    // caller's attempt does not use it up.
    const startedBy = fieldText(record, "recordOwner") || undefined;
    if (startedBy !== undefined && startedBy !== ownership?.recordOwner) throw notOwnerError();
    const won = await states.create(
      { id: used, expiresAt: record.expiresAt, fields: {}, secrets: {} },
      { signal },
    );
    if (!won) throw invalidState("already used");
    void states.remove(id).catch(() => {});
    return record;
  };

  return {
    async start(q, signal) {
      const p = flowProvider(opts.providers, q.provider);
      if (!p.redirectUris.includes(q.redirectUri)) {
        throw invalidArgument([
          {
            field: "redirect_uri",
            description:
              p.redirectUris.length === 0
                ? `provider "${q.provider}" has no redirectUris configured`
                : `not one of provider "${q.provider}"'s redirectUris`,
          },
        ]);
      }
      const scopes = q.scopes.length > 0 ? q.scopes : p.authorizationScopes;
      const req = await opts.upstream
        .authorizationRequest(q.provider, {
          signal: upstreamSignal(),
          redirectUri: q.redirectUri,
          scopes,
          loginHint: q.loginHint,
          prompt: q.prompt,
        })
        .catch((err: unknown) => {
          throw flowError(err, q.provider, "the authorization request");
        });
      const expiresAt = clock.now() + opts.stateTtlMs;
      await states.create(
        {
          id: handleId("auth", req.state),
          expiresAt,
          fields: {
            kind: "authorization",
            sessionId: q.sessionId,
            provider: q.provider,
            redirectUri: q.redirectUri,
            scopes: [...scopes],
            ...ownershipFields(q.ownership),
          },
          secrets: {
            codeVerifier: req.codeVerifier,
            ...(req.nonce !== undefined ? { nonce: req.nonce } : {}),
          },
        },
        { signal },
      );
      return { url: req.url, state: req.state, expiresAt };
    },

    async complete(q, signal) {
      let callback: URLSearchParams;
      let state = q.state;
      let callbackUrl: URL | undefined;
      if (q.callbackUrl !== undefined) {
        callbackUrl = URL.parse(q.callbackUrl) ?? undefined;
        if (callbackUrl === undefined) {
          throw invalidArgument([{ field: "callback_url", description: "not an absolute URL" }]);
        }
        callback = callbackUrl.searchParams;
        const inUrl = callback.get("state") ?? "";
        if (state !== "" && inUrl !== state) {
          throw invalidArgument([{ field: "state", description: "differs from the callback's" }]);
        }
        state = inUrl;
        if (state === "") {
          throw invalidArgument([{ field: "callback_url", description: "has no state" }]);
        }
      } else {
        if (state === "") throw invalidArgument([{ field: "state", description: "required" }]);
        callback = new URLSearchParams({ code: q.code ?? "", state });
      }
      const record = await take(state, q.ownership, signal);
      const sessionId = fieldText(record, "sessionId");
      const provider = fieldText(record, "provider");
      const redirectUri = fieldText(record, "redirectUri");
      const p = flowProvider(opts.providers, provider);
      const base = (u: URL) => `${u.origin}${u.pathname}`;
      if (callbackUrl !== undefined && base(callbackUrl) !== base(new URL(redirectUri))) {
        throw invalidArgument([
          { field: "callback_url", description: "is not the redirect URI the authorization used" },
        ]);
      }
      const startedAt = clock.now();
      const res = await opts.upstream
        .redeemCode(provider, {
          signal: upstreamSignal(),
          callback,
          state,
          redirectUri,
          codeVerifier: record.secrets.codeVerifier ?? "",
          nonce: record.secrets.nonce,
          codeOnly: callbackUrl === undefined,
        })
        .catch((err: unknown) => {
          throw flowError(err, provider, "the authorization");
        });
      const tokens = flowTokenSet(res, startedAt, opts.lifetimeOf(provider), p.clientId);
      // The code is redeemed: the tokens are stored even if this caller leaves meanwhile.
      const stored = storeLogin(opts, ownedStore(record, { sessionId, provider, tokens }));
      const generation = await abandonWait(stored, signal);
      if (generation === undefined) {
        throw new TokenVendError(
          "SHUTTING_DOWN",
          "the service stopped before the login was stored",
        );
      }
      opts.logger.info(
        { provider, generation, oidc: res.subject !== undefined },
        "authorization completed",
      );
      return {
        sessionId,
        provider,
        generation,
        scopes: tokens.scopes.length > 0 ? tokens.scopes : fieldList(record, "scopes"),
        subject: res.subject,
        expiresAt: tokens.expiresAt,
      };
    },
  };
}
