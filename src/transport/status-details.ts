// Rich error details (ErrorInfo, BadRequest) travel as a google.rpc.Status in
// the `grpc-status-details-bin` trailer, the encoding every gRPC client and
// grpcurl understand; Connect puts the same Status there itself, the gRPC
// listener uses encodeGrpcStatusDetails.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema, anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import type { ConnectError } from "@connectrpc/connect";
import {
  type BadRequest,
  BadRequestSchema,
  type ErrorInfo,
  ErrorInfoSchema,
} from "../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";

/** The trailer that carries an encoded google.rpc.Status. */
export const grpcStatusDetailsKey = "grpc-status-details-bin";

/**
 * The google.rpc.Status of an error, encoded for `grpc-status-details-bin`;
 * undefined when it has no details (grpc-status and grpc-message say it all).
 * Details are google.protobuf.Any, so a client that knows ErrorInfo unpacks it.
 */
export function encodeGrpcStatusDetails(err: ConnectError): Uint8Array | undefined {
  if (err.details.length === 0) return undefined;
  const details = err.details.map(
    (d): Any =>
      "desc" in d
        ? anyPack(d.desc, create(d.desc, d.value))
        : // Relayed from another wire error: already encoded, keep it as it came.
          create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }),
  );
  return toBinary(
    StatusSchema,
    create(StatusSchema, { code: err.code, message: err.rawMessage, details }),
  );
}

export interface GrpcStatusDetails {
  readonly code: number;
  readonly message: string;
  /** Every detail, packed. */
  readonly details: readonly Any[];
  /** The first google.rpc.ErrorInfo detail, if any. */
  readonly errorInfo?: ErrorInfo;
  /** The first google.rpc.BadRequest detail, if any. */
  readonly badRequest?: BadRequest;
}

/** Decodes a `grpc-status-details-bin` value (the raw bytes, not base64). */
export function decodeGrpcStatusDetails(buf: Uint8Array): GrpcStatusDetails {
  const status = fromBinary(StatusSchema, buf);
  let errorInfo: ErrorInfo | undefined;
  let badRequest: BadRequest | undefined;
  for (const any of status.details) {
    errorInfo ??= anyUnpack(any, ErrorInfoSchema);
    badRequest ??= anyUnpack(any, BadRequestSchema);
  }
  return {
    code: status.code,
    message: status.message,
    details: status.details,
    ...(errorInfo !== undefined ? { errorInfo } : {}),
    ...(badRequest !== undefined ? { badRequest } : {}),
  };
}
