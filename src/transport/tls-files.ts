// TLS for both listeners from PEM files that are read again when they change
// (cert-manager and spiffe-helper rotate them in place): every interval the
// files are read, and a changed set that makes a valid secure context replaces
// the old one for new connections; a broken or half-written set is reported
// and the old one kept. The gRPC listener gets it as a grpc-js
// CertificateProvider, the HTTP listener as tls.Server#setSecureContext.

import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import * as grpc from "@grpc/grpc-js";

export interface TlsFilesOptions {
  readonly certFile: string;
  readonly keyFile: string;
  /** CA bundle that client certificates must chain to: mTLS. */
  readonly clientCaFile?: string | undefined;
  /** Refuse the handshake without a valid client certificate (else it is optional). */
  readonly requireClientCert: boolean;
  readonly reloadIntervalMs: number;
  /** A changed set that could not be used; the previous one stays. */
  readonly onError?: (err: unknown) => void;
  /** A new set is in use. */
  readonly onReload?: () => void;
}

export interface TlsFiles {
  readonly options: TlsFilesOptions;
  /** The current cert, key and CA, for a tls.Server. */
  current(): SecureContextOptions;
  /** Called with each new set. */
  onChange(fn: (ctx: SecureContextOptions) => void): void;
  /** When the served certificate (the first of the chain) expires, in ms since the epoch. */
  notAfterMs(): number;
  /** The gRPC listener's credentials, following the files. */
  grpcCredentials(): grpc.ServerCredentials;
  /** Reads the files now (the interval does it too). */
  check(): void;
  close(): void;
}

/** Reads the files once (throws when they are not a usable set), then watches them. */
export function watchTlsFiles(opts: TlsFilesOptions): TlsFiles {
  const read = (): SecureContextOptions => {
    const ctx: SecureContextOptions = {
      cert: readFileSync(opts.certFile),
      key: readFileSync(opts.keyFile),
      ...(opts.clientCaFile !== undefined ? { ca: readFileSync(opts.clientCaFile) } : {}),
    };
    createSecureContext(ctx); // throws on a key that does not match, or bad PEM
    return ctx;
  };
  const same = (a: SecureContextOptions, b: SecureContextOptions) =>
    (["cert", "key", "ca"] as const).every((k) =>
      a[k] === undefined
        ? b[k] === undefined
        : Buffer.compare(a[k] as Buffer, b[k] as Buffer) === 0,
    );
  let current = read();
  const listeners: ((ctx: SecureContextOptions) => void)[] = [];
  const check = () => {
    let next: SecureContextOptions;
    try {
      next = read();
    } catch (err) {
      opts.onError?.(err);
      return;
    }
    if (same(next, current)) return;
    current = next;
    for (const l of listeners) l(next);
    opts.onReload?.();
  };
  const timer = setInterval(check, opts.reloadIntervalMs);
  timer.unref();

  const identity = new Set<grpc.experimental.IdentityCertificateUpdateListener>();
  const ca = new Set<grpc.experimental.CaCertificateUpdateListener>();
  const provider: grpc.experimental.CertificateProvider = {
    // grpc-js adds its watcher after adding the listener: the first set goes out after that.
    addIdentityCertificateListener(l) {
      identity.add(l);
      queueMicrotask(() =>
        l({ certificate: current.cert as Buffer, privateKey: current.key as Buffer }),
      );
    },
    removeIdentityCertificateListener: (l) => identity.delete(l),
    addCaCertificateListener(l) {
      ca.add(l);
      queueMicrotask(() => {
        if (current.ca !== undefined) l({ caCertificate: current.ca as Buffer });
      });
    },
    removeCaCertificateListener: (l) => ca.delete(l),
  };
  listeners.push((ctx) => {
    for (const l of identity) l({ certificate: ctx.cert as Buffer, privateKey: ctx.key as Buffer });
    if (ctx.ca !== undefined) for (const l of ca) l({ caCertificate: ctx.ca as Buffer });
  });
  return {
    options: opts,
    current: () => current,
    onChange: (fn) => listeners.push(fn),
    notAfterMs: () => Date.parse(new X509Certificate(current.cert as Buffer).validTo),
    // grpc-js's function names its first parameter the CA provider but passes it on as
    // the identity one (1.14); both are this provider, or no CA without mTLS.
    grpcCredentials: () =>
      grpc.experimental.createCertificateProviderServerCredentials(
        provider,
        opts.clientCaFile !== undefined ? provider : null,
        opts.requireClientCert,
      ),
    check,
    close: () => clearInterval(timer),
  };
}
