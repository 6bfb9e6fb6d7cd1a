// Authentication as the listeners run it: a hook the application gives, called
// with what arrived before the request body (headers or metadata, the client
// certificate the TLS handshake verified, the peer's address) and before
// anything of the call runs. What it resolves to reaches the handler as the
// context value `authenticatedKey`; a rejection ends the call with that error
// (a ConnectError; anything else is UNAUTHENTICATED), and the body is never
// decoded. grpc.health.v1 stays open for probes; everything else, reflection
// included, goes through the hook.

import type { PeerCertificate, TLSSocket } from "node:tls";
import { Code, ConnectError, createContextKey } from "@connectrpc/connect";

export interface AuthenticationRequest {
  /** The first value of a request header (gRPC metadata), by lower-case name. */
  header(name: string): string | undefined;
  /** The client certificate, only when the TLS handshake verified it. */
  readonly certificate: PeerCertificate | undefined;
  /** The peer's address, as the listener saw it. */
  readonly peer: string;
  /** The call's path: /package.Service/Method. */
  readonly path: string;
  /** Time left before the call's deadline, in ms; undefined without one. */
  timeoutMs(): number | undefined;
}

/** Resolves to the authenticated caller; rejects (a ConnectError) to refuse the call. */
export type Authenticate = (req: AuthenticationRequest) => Promise<unknown>;

/** The context value that holds what Authenticate resolved to. */
export const authenticatedKey = createContextKey<unknown>(undefined, {
  description: "the caller, as the listener's authenticate hook proved it",
});

const openPrefix = "/grpc.health.v1.Health/";

/** Whether a path is served without authentication (health, for probes). */
export function isOpenPath(path: string): boolean {
  return path.startsWith(openPrefix);
}

/** A refusal as the caller gets it: the hook's ConnectError, else a bare UNAUTHENTICATED. */
export function refusalOf(err: unknown): ConnectError {
  return err instanceof ConnectError
    ? err
    : new ConnectError("authentication failed", Code.Unauthenticated, undefined, undefined, err);
}

// A connection's certificate cannot change: read once per socket (getPeerCertificate
// builds a new object from the X.509 on every call).
const bySocket = new WeakMap<object, { cert: PeerCertificate | undefined }>();

/** The verified client certificate of a TLS socket, if it has one. */
export function verifiedCertificate(socket: unknown): PeerCertificate | undefined {
  const tls = socket as Partial<TLSSocket> | undefined;
  if (tls?.authorized !== true || typeof tls.getPeerCertificate !== "function") return undefined;
  let known = bySocket.get(tls);
  if (known === undefined) {
    const cert = tls.getPeerCertificate();
    known = { cert: cert !== undefined && Object.keys(cert).length > 0 ? cert : undefined };
    bySocket.set(tls, known);
  }
  return known.cert;
}

/** "address:port" of a socket's peer. */
export function peerOf(
  socket: { remoteAddress?: string | undefined; remotePort?: number | undefined } | undefined,
): string {
  const a = socket?.remoteAddress ?? "unknown";
  return a.includes(":") ? `[${a}]:${socket?.remotePort ?? 0}` : `${a}:${socket?.remotePort ?? 0}`;
}

/**
 * The time a call was given, in ms, from its `grpc-timeout` (gRPC, gRPC-Web: digits and a unit)
 * or `connect-timeout-ms` header; undefined without one or when it does not parse.
 */
export function headerTimeoutMs(header: (name: string) => string | undefined): number | undefined {
  const connect = header("connect-timeout-ms");
  if (connect !== undefined) return /^\d{1,10}$/.test(connect) ? Number(connect) : undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(header("grpc-timeout") ?? "");
  return m ? Number(m[1]) * (grpcTimeoutUnitMs[m[2] as string] as number) : undefined;
}

const grpcTimeoutUnitMs: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1_000,
  m: 1,
  u: 1e-3,
  n: 1e-6,
};
