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
import { deadlineAtOf, toServiceError } from "./grpc-metadata.ts";
import { connectionOf } from "./library-internals.ts";

/** What cannot change within a connection: its peer, and its verified client certificate. */
interface Connection {
  readonly peer: string;
  cert?: { value: PeerCertificate | undefined };
}
const connections = new WeakMap<object, Connection>();

function connectionInfoOf(call: grpc.ServerInterceptingCallInterface): Connection {
  const key = connectionOf(call);
  let known = key !== undefined ? connections.get(key) : undefined;
  if (known === undefined) {
    const a = call.getConnectionInfo();
    known = { peer: peerOf({ remoteAddress: a.remoteAddress, remotePort: a.remotePort }) };
    if (key !== undefined) connections.set(key, known);
  }
  return known;
}

function certificateOf(call: grpc.ServerInterceptingCallInterface, c: Connection) {
  c.cert ??= { value: call.getAuthContext().sslPeerCertificate };
  return c.cert.value;
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
            const connection = connectionInfoOf(call);
            authenticate({
              header: (name) => {
                const v = metadata.get(name)[0];
                return typeof v === "string" ? v : undefined;
              },
              // Read only when asked for: a bearer credential needs no certificate.
              get certificate() {
                return certificateOf(call, connection);
              },
              peer: connection.peer,
              path: method.path,
              timeoutMs() {
                const at = deadlineAtOf(call);
                return at === undefined ? undefined : at - Date.now();
              },
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
