// How the key set of an issuer inside the cluster is fetched: the Kubernetes
// API server serves its discovery document and key set over HTTPS under the
// cluster's own CA, and only to authenticated callers (by default every
// service account, through system:service-account-issuer-discovery). So a
// request may trust a CA file and carry a bearer token read from a file on
// each request (a projected token, rotated by the kubelet), only to the
// issuer's own origin or the configured key set's. node:https, since
// the global fetch takes no CA without its undici dispatcher.

import { readFileSync } from "node:fs";
import https from "node:https";

/** The little of fetch the key set uses. */
export type JsonFetch = (
  url: string,
  init: { readonly signal: AbortSignal },
) => Promise<{ readonly status: number; json(): Promise<unknown> }>;

export interface IssuerFetchOptions {
  /** PEM of the CA the issuer's certificate chains to (else the system's). */
  readonly ca?: string | undefined;
  /** A file holding a bearer token, read on each request it is sent with. */
  readonly tokenFile?: string | undefined;
  /**
   * The origins the token goes to: the issuer's and a configured jwksUri's. A key set URL that a
   * discovery document names elsewhere is fetched without it: the pod's token is a credential.
   */
  readonly tokenOrigins: readonly string[];
}

const maxBodyBytes = 1024 * 1024;

export function issuerFetch(opts: IssuerFetchOptions): JsonFetch {
  return (url, init) =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = {
        accept: "application/json, application/jwk-set+json",
      };
      if (opts.tokenFile !== undefined && opts.tokenOrigins.includes(new URL(url).origin)) {
        headers.authorization = `Bearer ${readFileSync(opts.tokenFile, "utf8").trim()}`;
      }
      const req = https.get(
        url,
        { headers, signal: init.signal, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (b: Buffer) => {
            size += b.length;
            if (size > maxBodyBytes) req.destroy(new Error(`${url}: the answer is over 1 MiB`));
            else chunks.push(b);
          });
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              json: async () => JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown,
            }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
    });
}
