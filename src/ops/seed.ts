// Preloading tokens at start (config-bootstrap.ts): each one is stored as generation 1 of its key,
// only when the key has no generation at all. A restart finds it and writes nothing; replicas that
// start together race for generation 1 on the store's unique (key, generation) rule, and exactly
// one writes it. A key that was renewed, replaced or revoked since is never touched again.

import { keyId, type TokenKey, type TokenRecord } from "../core/token.ts";
import type { TokenStore } from "../core/token-store.ts";

/** A token preloaded from configuration (config-bootstrap.ts parses them). */
export interface BootstrapToken {
  readonly key: TokenKey;
  /** "" when only a refresh token was given: stored expired, so the first use refreshes. */
  readonly accessToken: string;
  readonly refreshToken: string | undefined;
  readonly idToken: string | undefined;
  readonly tokenType: string;
  readonly scopes: readonly string[];
  readonly subject: string | undefined;
  readonly clientId: string | undefined;
  /** The session's owner (a caller id or tenant), sealed with the tokens like a stored one's. */
  readonly owner: string | undefined;
  /** Absolute expiry (epoch ms), or a lifetime counted from when it is first stored. */
  readonly expiry: { readonly atMs: number } | { readonly inMs: number };
}

export interface SeedResult {
  /** Written by this call. */
  readonly stored: number;
  /** Present already (from an earlier start, another replica, or later use). */
  readonly present: number;
}

/** The record a preloaded token becomes when first stored at `nowMs`. */
export function bootstrapRecord(t: BootstrapToken, nowMs: number): TokenRecord {
  // Only a refresh token: stored expired, so the first call refreshes it.
  const expiresAt =
    t.accessToken === "" ? nowMs : "atMs" in t.expiry ? t.expiry.atMs : nowMs + t.expiry.inMs;
  return {
    key: t.key,
    generation: 1,
    reason: t.key.kind === "grant" ? "granted" : "stored",
    tokens: {
      accessToken: t.accessToken,
      refreshToken: t.refreshToken,
      idToken: t.idToken,
      tokenType: t.tokenType,
      scopes: [...t.scopes],
      issuedAt: Math.min(nowMs, expiresAt),
      expiresAt,
      subject: t.subject,
      clientId: t.clientId,
      ...(t.owner !== undefined ? { owner: t.owner } : {}),
    },
  };
}

export async function seedStore(
  store: TokenStore,
  tokens: readonly BootstrapToken[],
  opts: { readonly nowMs: number; readonly signal?: AbortSignal | undefined },
): Promise<SeedResult> {
  // One query for every key, opening nothing: a record this keyring cannot open still counts.
  const existing = await store.activeGenerations(
    tokens.map((t) => t.key),
    opts,
  );
  let stored = 0;
  let present = 0;
  for (const t of tokens) {
    if (existing.has(keyId(t.key))) {
      present++;
      continue;
    }
    const res = await store.insert(bootstrapRecord(t, opts.nowMs), opts);
    if (res.inserted) stored++;
    else present++;
  }
  return { stored, present };
}
