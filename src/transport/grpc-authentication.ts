// Authentication on the gRPC listener: a grpc-js server interceptor that runs
// the hook when the call's metadata arrives, before its message is read (the
// handler asks for the message only once the metadata passed). A refused call
// ends there with the hook's status; an accepted one carries its caller to the
// handler's context (authenticatedBy, read by grpc-call-context.ts), found by
// the metadata object grpc-js hands the handler, which is the one passed on
// here (test/library-internals.test.ts pins it; were it to change, handlers
// would find no caller and refuse every call: closed, never open).

import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { type Authenticate, isOpenPath, peerOf, refusalOf } from "./authentication.ts";
import { toServiceError } from "./grpc-metadata.ts";
import { connectionOf } from "./library-internals.ts";

/** The verified client certificate of each TLS connection, read once per connection. */
const certificates = new WeakMap<object, { cert: PeerCertificate | undefined }>();

function certificateOf(call: grpc.ServerInterceptingCallInterface): PeerCertificate | undefined {
  const connection = connectionOf(call);
  if (connection === undefined) return call.getAuthContext().sslPeerCertificate;
  let known = certificates.get(connection);
  if (known === undefined) {
    known = { cert: call.getAuthContext().sslPeerCertificate };
    certificates.set(connection, known);
  }
  return known.cert;
}

/** The caller of each accepted call, by the metadata object its handler gets. */
const callers = new WeakMap<grpc.Metadata, unknown>();

export function authenticatedBy(metadata: grpc.Metadata): unknown {
  return callers.get(metadata);
}

/** `openPaths`: more paths served without authentication (the benchmark's echo). */
export function grpcAuthentication(
  authenticate: Authenticate,
  openPaths: ReadonlySet<string> = new Set(),
): grpc.ServerInterceptor {
  return (method, call) => {
    if (isOpenPath(method.path) || openPaths.has(method.path)) {
      return new grpc.ServerInterceptingCall(call);
    }
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, pass) {
            const address = call.getConnectionInfo();
            authenticate({
              header: (name) => {
                const v = metadata.get(name)[0];
                return typeof v === "string" ? v : undefined;
              },
              // Read only when asked for: a bearer credential needs no certificate.
              get certificate() {
                return certificateOf(call);
              },
              peer: peerOf({
                remoteAddress: address.remoteAddress,
                remotePort: address.remotePort,
              }),
              path: method.path,
            }).then(
              (caller) => {
                callers.set(metadata, caller);
                pass(metadata);
              },
              (err: unknown) => {
                const e = toServiceError(refusalOf(err), undefined);
                call.sendStatus({
                  code: e.code as grpc.status,
                  details: e.details ?? "",
                  metadata: e.metadata ?? new grpc.Metadata(),
                });
              },
            );
          },
        });
      },
    });
  };
}
