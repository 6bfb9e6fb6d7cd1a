// Responses built once per token generation and never mutated afterwards are
// "frozen": the gRPC listener encodes them once and reuses the bytes, so a
// cached GetValidTokens costs no protobuf encoding.

import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";

const frozen = new WeakSet<object>();
const encoded = new WeakMap<object, Uint8Array>();

/** Marks `message` as never to be mutated again; returns it. */
export function freeze<T extends object>(message: T): T {
  frozen.add(message);
  return message;
}

/** Whether `message` was frozen (so derived bytes may be kept with it). */
export function isFrozen(message: object): boolean {
  return frozen.has(message);
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
