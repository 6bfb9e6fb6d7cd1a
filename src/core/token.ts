// What the service stores and vends: keys and generations of tokens.

export type TokenKey =
  | { readonly kind: "session"; readonly sessionId: string; readonly provider: string }
  | { readonly kind: "grant"; readonly grant: string };

/** A stable string form of a key, for maps and documents. Unit separator can't occur in ids. */
export function keyId(key: TokenKey): string {
  return key.kind === "session"
    ? `s\u001f${key.provider}\u001f${key.sessionId}`
    : `g\u001f${key.grant}`;
}

export function sessionKey(sessionId: string, provider: string): TokenKey {
  return { kind: "session", sessionId, provider };
}

export function grantKey(grant: string): TokenKey {
  return { kind: "grant", grant };
}

/** Why a generation exists. */
export type GenerationReason = "stored" | "refreshed" | "granted" | "revoked";

export interface TokenSet {
  readonly accessToken: string;
  readonly refreshToken?: string | undefined;
  readonly idToken?: string | undefined;
  readonly tokenType: string;
  readonly scopes: readonly string[];
  /** When the token was obtained (wall-clock ms). */
  readonly issuedAt: number;
  /** When the provider says the access token expires (wall-clock ms). */
  readonly expiresAt: number;
  /** Binding checked against a caller's expectation. */
  readonly subject?: string | undefined;
  readonly clientId?: string | undefined;
  /** Who stored the session (a caller id or tenant:NAME); others may not touch it. */
  readonly owner?: string | undefined;
}

/** One generation of a key. A revoked generation carries no tokens and hides all below it. */
export type TokenRecord =
  | {
      readonly key: TokenKey;
      readonly generation: number;
      readonly reason: Exclude<GenerationReason, "revoked">;
      readonly tokens: TokenSet;
    }
  | {
      readonly key: TokenKey;
      readonly generation: number;
      readonly reason: "revoked";
      readonly tokens?: undefined;
    };

export type LiveRecord = Extract<TokenRecord, { tokens: TokenSet }>;

export function isLive(r: TokenRecord | undefined): r is LiveRecord {
  return r !== undefined && r.reason !== "revoked";
}

/** The characters a token set holds in strings: what memory estimates count (key-cache.ts, token-store.ts). */
export function tokenChars(t: TokenSet | undefined): number {
  if (t === undefined) return 0;
  let chars = t.accessToken.length + (t.refreshToken?.length ?? 0) + (t.idToken?.length ?? 0);
  chars += (t.subject?.length ?? 0) + (t.clientId?.length ?? 0) + (t.owner?.length ?? 0);
  for (const s of t.scopes) chars += s.length + 16;
  return chars;
}
