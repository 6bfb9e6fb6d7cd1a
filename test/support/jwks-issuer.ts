// A JWT issuer on loopback, as Kubernetes' API server is one for projected
// service-account tokens: an OIDC discovery document, a JWKS endpoint, signing
// keys generated at test time that can be rotated, and an endpoint that can be
// taken down. It signs Kubernetes-shaped tokens (sub
// system:serviceaccount:NS:NAME, aud, the kubernetes.io claims) and anything else.

import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import {
  type CryptoKey,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";

interface Key {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

export interface TokenOptions {
  readonly namespace?: string;
  readonly name?: string;
  readonly audience?: string | string[];
  /** Seconds from now; negative: already expired. */
  readonly expiresIn?: number;
  readonly issuedAgo?: number;
  readonly notBeforeIn?: number;
  /** Sign with this key id's key (default: the newest published key). */
  readonly kid?: string;
  /** Sign with a key that is not published, under `kid` (a bad signature). */
  readonly foreignKey?: boolean;
  readonly issuer?: string;
  /** Extra or replacing claims (sub, tsid, client_id...). */
  readonly claims?: JWTPayload;
}

export interface JwksIssuer {
  readonly issuer: string;
  readonly jwksUri: string;
  /** JWKS and discovery requests served so far. */
  readonly requests: { jwks: number; discovery: number };
  /** A service-account token (or any JWT with options.claims). */
  sign(opts?: TokenOptions): Promise<string>;
  /** Publishes a new key and signs with it from now on; keepOld: the old one stays published. */
  rotate(keepOld: boolean): Promise<string>;
  /** Answers 503 to everything while down. */
  setDown(down: boolean): void;
  readonly kids: string[];
  stop(): Promise<void>;
}

let counter = 0;

async function newKey(): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const kid = `k${++counter}-${Date.now().toString(36)}`;
  return {
    kid,
    privateKey,
    jwk: { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" },
  };
}

export interface IssuerOptions {
  /** Serve HTTPS with this certificate and key (files), as an API server does under its CA. */
  readonly tls?: { readonly cert: string; readonly key: string };
  /** Answer 401 unless a request carries `authorization: Bearer <this>` (changeable). */
  bearer?: string;
}

export async function startJwksIssuer(opts: IssuerOptions = {}): Promise<JwksIssuer> {
  let keys: Key[] = [await newKey()];
  let down = false;
  const requests = { jwks: 0, discovery: 0 };
  let base = "";
  const handle = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url === "/openid/v1/jwks") requests.jwks++;
    if (req.url === "/.well-known/openid-configuration") requests.discovery++;
    if (down) {
      res.writeHead(503).end();
      return;
    }
    if (opts.bearer !== undefined && req.headers.authorization !== `Bearer ${opts.bearer}`) {
      res.writeHead(401).end();
      return;
    }
    if (req.url === "/.well-known/openid-configuration") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ issuer: base, jwks_uri: `${base}/openid/v1/jwks` }));
    } else if (req.url === "/openid/v1/jwks") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: keys.map((k) => k.jwk) }));
    } else {
      res.writeHead(404).end();
    }
  };
  const server =
    opts.tls !== undefined
      ? https.createServer(
          { cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) },
          handle,
        )
      : http.createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const scheme = opts.tls !== undefined ? "https" : "http";
  base = `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const foreign = await newKey();
  return {
    issuer: base,
    jwksUri: `${base}/openid/v1/jwks`,
    requests,
    get kids() {
      return keys.map((k) => k.kid);
    },
    async sign(o = {}) {
      const ns = o.namespace ?? "apps";
      const name = o.name ?? "client";
      const now = Math.floor(Date.now() / 1000);
      const key = keys.find((k) => k.kid === o.kid) ?? (keys.at(-1) as Key);
      const kid = o.kid ?? key.kid;
      const jwt = new SignJWT({
        "kubernetes.io": {
          namespace: ns,
          serviceaccount: { name, uid: "00000000-0000-4000-8000-000000000001" },
        },
        ...o.claims,
      })
        .setProtectedHeader({ alg: "RS256", kid })
        .setIssuer(o.issuer ?? base)
        .setSubject(`system:serviceaccount:${ns}:${name}`)
        .setAudience(o.audience ?? "tokenvend")
        .setIssuedAt(now - (o.issuedAgo ?? 0))
        .setExpirationTime(now + (o.expiresIn ?? 600));
      if (o.notBeforeIn !== undefined) jwt.setNotBefore(now + o.notBeforeIn);
      if (o.claims?.sub !== undefined) jwt.setSubject(o.claims.sub);
      return jwt.sign(o.foreignKey === true ? foreign.privateKey : key.privateKey);
    },
    async rotate(keepOld) {
      const k = await newKey();
      keys = keepOld ? [...keys, k] : [k];
      return k.kid;
    },
    setDown(d) {
      down = d;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
