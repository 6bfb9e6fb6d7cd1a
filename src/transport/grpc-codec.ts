// Messages on the gRPC listener pass grpc-js as raw bytes: decoding and
// encoding happen here, so a malformed request is INVALID_ARGUMENT, and a
// frozen response is encoded once (see frozen-message.ts).

import { type DescMessage, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type UnaryRequest } from "@connectrpc/connect";
import { encodeMessage } from "./frozen-message.ts";

export const identity = (b: Buffer) => b;
// grpc-js keeps a stream's request for the stream's whole life, and the bytes
// it hands over are a view of a 64 KiB read buffer: a copy of its own (not from
// Buffer's shared pool, which a kept slice would pin whole) lets that go.
export const ownCopy = (b: Buffer) => {
  const copy = Buffer.allocUnsafeSlow(b.byteLength);
  b.copy(copy);
  return copy;
};

export type DescMessageShape = UnaryRequest["message"];

export function decode<D extends DescMessage>(desc: D, bytes: Buffer) {
  try {
    return fromBinary(desc, bytes);
  } catch (err) {
    throw new ConnectError(
      `cannot decode ${desc.typeName}`,
      Code.InvalidArgument,
      undefined,
      undefined,
      err,
    );
  }
}

export function encode(desc: DescMessage, message: DescMessageShape): Buffer {
  const u8 = encodeMessage(desc, message);
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}
