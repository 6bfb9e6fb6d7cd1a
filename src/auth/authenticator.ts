// Who a call comes from, decided from what reached the listener before the
// request body: an `authorization: Bearer` credential (a JWT of a configured
// issuer, or an API key by its prefix) or, without one, the client certificate
// the TLS handshake verified (mTLS). Nothing proven: UNAUTHENTICATED.

import type { PeerCertificate } from "node:tls";
import type { ApiKeys } from "./api-keys.ts";
import { isApiKey } from "./api-keys.ts";
import { type Caller, unauthenticated } from "./caller.ts";
import type { JwtVerifier } from "./jwt-verifier.ts";
import { certificateIdentity } from "./peer-identity.ts";

export interface Credentials {
  /** The authorization header, if any. */
  readonly authorization: string | undefined;
  /** The client certificate, only when the handshake verified it against the CA. */
  readonly certificate: PeerCertificate | undefined;
  readonly peer: string;
}

export interface Authenticator {
  authenticate(c: Credentials): Promise<Caller>;
}

export interface AuthenticatorOptions {
  readonly jwt?: JwtVerifier | undefined;
  readonly apiKeys?: ApiKeys | undefined;
  /** Client certificates identify callers. */
  readonly mtls: boolean;
}

// Longer than any token a caller should send; not worth parsing.
const maxCredentialChars = 16_384;

export function createAuthenticator(opts: AuthenticatorOptions): Authenticator {
  return {
    async authenticate(c) {
      const header = c.authorization;
      if (header !== undefined && header !== "") {
        const m = /^Bearer +(\S+)$/i.exec(header);
        if (m === null || header.length > maxCredentialChars) {
          throw unauthenticated("MALFORMED_CREDENTIALS", "authorization must be: Bearer <token>");
        }
        const credential = m[1] as string;
        if (isApiKey(credential)) {
          if (opts.apiKeys === undefined) {
            throw unauthenticated("UNKNOWN_API_KEY", "API keys are not accepted here");
          }
          return { ...opts.apiKeys.verify(credential), peer: c.peer };
        }
        if (opts.jwt === undefined) {
          throw unauthenticated("UNTRUSTED_ISSUER", "bearer JWTs are not accepted here");
        }
        const v = await opts.jwt.verify(credential);
        return {
          id: v.id,
          method: v.method,
          issuer: v.issuer,
          expiresAt: v.expiresAt,
          peer: c.peer,
        };
      }
      if (opts.mtls && c.certificate !== undefined) {
        return { ...certificateIdentity(c.certificate), peer: c.peer };
      }
      throw unauthenticated(
        "MISSING_CREDENTIALS",
        "this call needs credentials: authorization: Bearer <token or API key>, or a client certificate",
      );
    },
  };
}
