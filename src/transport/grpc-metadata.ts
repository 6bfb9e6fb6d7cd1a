// grpc-js Metadata and Connect's Headers, both ways, and a ConnectError as the
// status grpc-js sends (code, message, trailers, grpc-status-details-bin).

import type { ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { encodeGrpcStatusDetails, grpcStatusDetailsKey } from "./status-details.ts";

export type AnyCall =
  | grpc.ServerUnaryCall<Buffer, Buffer>
  | grpc.ServerWritableStream<Buffer, Buffer>;

// Protocol headers are grpc-js's to write; a handler or an error must not forge them.
const reservedHeader =
  /^(grpc-|:|content-type$|content-length$|te$|connection$|transfer-encoding$|trailer$|host$)/;

export function toMetadata(headers: Headers, into = new grpc.Metadata()): grpc.Metadata {
  headers.forEach((value, key) => {
    if (reservedHeader.test(key)) return;
    try {
      if (key.endsWith("-bin")) {
        for (const v of value.split(",")) into.add(key, Buffer.from(v.trim(), "base64"));
      } else {
        into.add(key, value);
      }
    } catch {
      // grpc-js refuses keys or values that are not legal metadata: drop them.
    }
  });
  return into;
}

export function sendHeaders(call: AnyCall, headers: Headers) {
  const md = toMetadata(headers);
  if (Object.keys(md.getMap()).length > 0) call.sendMetadata(md);
}

export function toServiceError(
  err: ConnectError,
  trailer: Headers | undefined,
): grpc.ServerErrorResponse {
  const metadata = toMetadata(
    err.metadata,
    trailer !== undefined ? toMetadata(trailer) : undefined,
  );
  const details = encodeGrpcStatusDetails(err);
  if (details !== undefined) metadata.set(grpcStatusDetailsKey, Buffer.from(details));
  // Connect's Code numbers are gRPC's status codes.
  return Object.assign(new Error(err.rawMessage), {
    code: err.code as number as grpc.status,
    details: err.rawMessage,
    metadata,
  });
}

/** When a call's deadline falls (ms since the epoch); undefined when it has none. */
export function deadlineAtOf(call: { getDeadline(): grpc.Deadline }): number | undefined {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? at : undefined;
}
