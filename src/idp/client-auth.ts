// How a provider's client authenticates at the token endpoint: client_secret_basic or
// client_secret_post with one or several secrets (rotation: the current one is used, the next
// one is tried on invalid_client), private_key_jwt (RFC 7523) with a PKCS#8 private key, or none
// (a public client).

import { createPrivateKey, type KeyObject, type webcrypto } from "node:crypto";
import * as oauth from "oauth4webapi";
import type { UpstreamProviderConfig } from "./provider-state.ts";

export interface ClientAuths {
  /** One per secret (one for private_key_jwt and none). */
  readonly list: readonly oauth.ClientAuth[];
  /** The index used first; it moves to the one that worked after invalid_client. */
  current: number;
  /** Values never to appear in a message. */
  readonly secrets: readonly string[];
}

export function createClientAuths(cfg: UpstreamProviderConfig, at: string): ClientAuths {
  if (cfg.authMethod === "none") return { list: [oauth.None()], current: 0, secrets: [] };
  if (cfg.authMethod === "private_key_jwt") {
    if (cfg.privateKey === undefined) {
      throw new TypeError(`${at}: authMethod private_key_jwt needs a private key`);
    }
    const key = signingKey(cfg.privateKey.pem, at);
    const kid = cfg.privateKey.kid;
    return {
      list: [oauth.PrivateKeyJwt(kid !== undefined ? { key, kid } : key)],
      current: 0,
      secrets: [],
    };
  }
  const secrets = cfg.clientSecrets ?? (cfg.clientSecret !== undefined ? [cfg.clientSecret] : []);
  if (secrets.length === 0 || secrets.some((s) => s === "")) {
    throw new TypeError(`${at}: authMethod ${cfg.authMethod} needs clientSecret`);
  }
  switch (cfg.authMethod) {
    case "client_secret_basic":
      return { list: secrets.map((s) => oauth.ClientSecretBasic(s)), current: 0, secrets };
    case "client_secret_post":
      return { list: secrets.map((s) => oauth.ClientSecretPost(s)), current: 0, secrets };
    default:
      throw new TypeError(
        `${at}.authMethod must be client_secret_basic, client_secret_post, private_key_jwt or none; got "${String(cfg.authMethod)}"`,
      );
  }
}

/** The WebCrypto signing key of a PEM private key: RS256 for RSA, ES256 for P-256, EdDSA for Ed25519. */
export function signingKey(pem: string, at: string): webcrypto.CryptoKey {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new TypeError(
      `${at}: the private key is not a PEM private key (${(err as Error).message})`,
    );
  }
  const type = key.asymmetricKeyType;
  if (type === "rsa") {
    return key.toCryptoKey({ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["sign"]);
  }
  if (type === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") {
    return key.toCryptoKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  }
  if (type === "ed25519") return key.toCryptoKey({ name: "Ed25519" }, false, ["sign"]);
  throw new TypeError(`${at}: the private key must be RSA, EC P-256 or Ed25519; got ${type}`);
}
