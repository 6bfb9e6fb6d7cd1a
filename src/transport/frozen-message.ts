// Responses built once and never mutated afterwards are "frozen": the gRPC
// listener encodes them once and reuses the bytes. tokenvend builds one per
// token generation, so a cached GetValidTokens costs no protobuf encoding, and
// a renewal pushed to 10,000 streams is framed once for all of them.

import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";

const frozen = new WeakSet<object>();
const encoded = new WeakMap<object, Uint8Array>();
const frames = new WeakMap<object, Buffer>();

/** Marks `message` as never to be mutated again; returns it. */
export function freeze<T extends object>(message: T): T {
  frozen.add(message);
  return message;
}

/** toBinary, memoized for frozen messages. */
export function encodeMessage<D extends DescMessage>(
  desc: D,
  message: MessageShape<D>,
): Uint8Array {
  if (!frozen.has(message)) return toBinary(desc, message);
  let bytes = encoded.get(message);
  if (bytes === undefined) {
    bytes = toBinary(desc, message);
    encoded.set(message, bytes);
  }
  return bytes;
}

/** The message as one gRPC length-prefixed frame, memoized for frozen messages. */
export function encodeFrame<D extends DescMessage>(desc: D, message: MessageShape<D>): Buffer {
  let frame = frames.get(message);
  if (frame === undefined) {
    const bytes = encodeMessage(desc, message);
    // Not from Buffer's pool: a frame shared by many streams lives on its own.
    frame = Buffer.allocUnsafeSlow(bytes.byteLength + 5);
    frame[0] = 0; // not compressed
    frame.writeUInt32BE(bytes.byteLength, 1);
    frame.set(bytes, 5);
    if (frozen.has(message)) frames.set(message, frame);
  }
  return frame;
}
