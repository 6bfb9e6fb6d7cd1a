// Generated request bodies for every TokenService RPC, in protobuf and in Connect/gRPC JSON:
// fast-check builds each message from the descriptor (so a new field or RPC is fuzzed with no
// change here), picks field values that reach deep (the seeded sessions, configured providers
// and grants) or break rules (odd Unicode, control characters, huge, out-of-range numbers and
// timestamps), and then often mutates the encoding (bytes flipped, cut, spliced; JSON values of
// the wrong type, unknown fields, broken syntax). Corpus entries (fuzz/corpus/rpc/) are mutated
// the same way.

import {
  create,
  type DescField,
  type DescMessage,
  type DescMethod,
  fromBinary,
  fromJsonString,
  type JsonValue,
  ScalarType,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import fc from "fast-check";
import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import type { RawProtocol } from "../test/support/raw-rpc.ts";

export interface RpcInput {
  readonly method: DescMethod;
  /** "json" bodies go to the +json protocols, "binary" to the others. */
  readonly encoding: "binary" | "json";
  readonly body: Uint8Array;
}

/** What the replica under fuzz knows (fuzz/rpc-target.ts seeds and configures these). */
export const known = {
  sessions: Array.from({ length: 8 }, (_, i) => `seed-${i}`),
  providers: ["idp"],
  grants: ["demo"],
  redirectUris: ["http://127.0.0.1:1/callback"],
};

const weird = [
  "",
  " ",
  " a",
  "a ",
  "\u0000",
  "\u007f",
  "\u0085",
  "\u202e",
  "\u200b",
  "\ufeff",
  "\ufffd",
  "\ud800",
  "e\u0301",
  "\u2028",
  "x".repeat(257),
  "t".repeat(16_385),
  "%00",
  "../../etc/passwd",
  '{"$gt":""}',
  "$where",
  "a.b",
  "null",
];

/** Mostly an hour around now (stored expiries), sometimes anything protobuf can hold. */
const timestamp = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .integer({ min: -3_600, max: 3_600 })
      .map((d) => ({ seconds: BigInt(Math.floor(Date.now() / 1000) + d), nanos: 0 })),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      seconds: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      nanos: fc.integer(),
    }),
  },
);

const anyText = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.stringMatching(/^[\x21-\x7e]{1,64}$/),
  fc.constantFrom(...weird),
);

/** A value for a string field, by its name: often one the replica knows. */
function stringFor(field: DescField): fc.Arbitrary<string> {
  const name = field.name;
  const pick = (values: readonly string[]) =>
    fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom(...values) },
      { weight: 1, arbitrary: anyText },
    );
  if (name.endsWith("session_id")) return pick(known.sessions);
  if (name === "provider") return pick(known.providers);
  if (name === "grant") return pick(known.grants);
  if (name.endsWith("redirect_uri")) return pick(known.redirectUris);
  if (name === "token_type") return pick(["Bearer", "DPoP"]);
  if (name.endsWith("_token") || name === "state" || name === "code") {
    return fc.oneof(
      { weight: 5, arbitrary: fc.stringMatching(/^[\x21-\x7e]{1,200}$/) },
      { weight: 1, arbitrary: anyText },
    );
  }
  return pick(["alice", "client-1", "https://api.example.test"]);
}

function scalar(t: ScalarType, field: DescField): fc.Arbitrary<unknown> {
  switch (t) {
    case ScalarType.STRING:
      return stringFor(field);
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 40 });
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.double();
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return fc.oneof(
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
        fc.bigInt(-5n, 1_000_000n),
      );
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt(0n, 1_000_000n));
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.oneof(
        { weight: 4, arbitrary: fc.integer({ min: 0, max: 600 }) },
        { weight: 1, arbitrary: fc.constantFrom(604_800, 604_801, 4_294_967_295) },
        { weight: 1, arbitrary: fc.nat() },
      );
    default:
      return fc.integer();
  }
}

function fieldValue(field: DescField, depth: number): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case "scalar":
      return scalar(field.scalar, field);
    case "enum":
      return fc.oneof(fc.constantFrom(...field.enum.values.map((v) => v.number)), fc.integer());
    case "message":
      return field.message.typeName === "google.protobuf.Timestamp"
        ? timestamp
        : messageInit(field.message, depth + 1);
    case "list": {
      const item =
        field.listKind === "scalar"
          ? scalar(field.scalar, field)
          : field.listKind === "enum"
            ? fc.integer()
            : messageInit(field.message, depth + 1);
      return fc.array(item, { maxLength: 4 });
    }
    case "map": {
      const value =
        field.mapKind === "message"
          ? messageInit(field.message, depth + 1)
          : field.mapKind === "enum"
            ? fc.integer()
            : scalar(field.scalar, field);
      return fc.dictionary(fc.string({ maxLength: 8 }), value, { maxKeys: 3 });
    }
  }
}

/** An init object for `create(desc, …)`: each field present or not, one case of each oneof. */
function messageInit(desc: DescMessage, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  if (depth > 3) return fc.constant({});
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    if (field.oneof !== undefined) continue;
    parts[field.localName] = fc.option(fieldValue(field, depth), { nil: undefined, freq: 3 });
  }
  for (const oneof of desc.oneofs) {
    parts[oneof.localName] = fc.option(
      fc.oneof(
        ...oneof.fields.map((f) =>
          fieldValue(f, depth).map((value) => ({ case: f.localName, value })),
        ),
      ),
      { nil: undefined, freq: 3 },
    );
  }
  return fc
    .record(parts)
    .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)));
}

const utf8 = new TextEncoder();

/** A message's encodings; JSON is undefined where protobuf-es refuses (a Timestamp out of range). */
function encode(desc: DescMessage, init: Record<string, unknown>) {
  const msg = create(desc, init as never);
  let json: string | undefined;
  try {
    json = toJsonString(desc, msg);
  } catch {
    json = undefined;
  }
  return { binary: toBinary(desc, msg), json };
}

const byteMutation = (bytes: Uint8Array): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    // flip one byte
    fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([at, b]) => {
      const out = Uint8Array.from(bytes);
      if (out.length > 0) out[at % out.length] = b;
      return out;
    }),
    // cut
    fc.nat().map((n) => bytes.subarray(0, bytes.length === 0 ? 0 : n % bytes.length)),
    // splice random bytes in
    fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 12 })).map(([at, ins]) => {
      const i = bytes.length === 0 ? 0 : at % bytes.length;
      return Uint8Array.from([...bytes.subarray(0, i), ...ins, ...bytes.subarray(i)]);
    }),
    // a field number and wire type the message does not have, or a duplicate of the message
    fc
      .uint8Array({ minLength: 1, maxLength: 6 })
      .map((tail) => Uint8Array.from([...bytes, ...tail])),
    fc.constant(Uint8Array.from([...bytes, ...bytes])),
  );

const jsonMutation = (text: string): fc.Arbitrary<string> => {
  let parsed: JsonValue;
  try {
    parsed = JSON.parse(text) as JsonValue;
  } catch {
    return fc.constant(text);
  }
  const obj = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? parsed : {};
  const keys = Object.keys(obj);
  return fc.oneof(
    // a field's value of another JSON type
    fc
      .tuple(fc.nat(), fc.jsonValue({ maxDepth: 2 }))
      .map(([i, v]) =>
        keys.length === 0 ? text : JSON.stringify({ ...obj, [keys[i % keys.length]!]: v }),
      ),
    // an unknown field
    fc
      .tuple(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 1 }))
      .map(([k, v]) => JSON.stringify({ ...obj, [k]: v })),
    // broken syntax
    fc.nat().map((n) => text.slice(0, text.length === 0 ? 0 : n % text.length)),
    fc.constantFrom(`${text}}`, `[${text}]`, text.replace(/"/, ""), `${text.slice(0, -1)},}`),
  );
};

/** Bytes that need not be a message at all. */
const rawBytes = fc.uint8Array({ maxLength: 300 });
const rawJson = fc.oneof(
  fc.json({ maxDepth: 3 }),
  fc.string({ unit: "binary", maxLength: 80 }),
  fc.constantFrom("", "{", "null", "[]", '{"sessionId":', "\ufeff{}", '{"a":1,"a":2}'),
);

/** Inputs for one method: built, mutated, or raw; in both encodings. */
export function inputsFor(
  method: DescMethod,
  corpus: { readonly binary: readonly Uint8Array[]; readonly json: readonly string[] } = {
    binary: [],
    json: [],
  },
): fc.Arbitrary<RpcInput> {
  const desc = method.input;
  const built = messageInit(desc).map((init) => encode(desc, init));
  const seeds = corpus.binary.length > 0 ? fc.constantFrom(...corpus.binary) : undefined;
  const jsonSeeds = corpus.json.length > 0 ? fc.constantFrom(...corpus.json) : undefined;
  const binary: fc.Arbitrary<Uint8Array> = fc.oneof(
    { weight: 4, arbitrary: built.map((e) => e.binary) },
    { weight: 4, arbitrary: built.chain((e) => byteMutation(e.binary)) },
    { weight: 1, arbitrary: rawBytes },
    ...(seeds !== undefined ? [{ weight: 2, arbitrary: seeds.chain(byteMutation) }] : []),
  );
  const json: fc.Arbitrary<string> = fc.oneof(
    { weight: 4, arbitrary: built.map((e) => e.json ?? "{}") },
    { weight: 4, arbitrary: built.chain((e) => jsonMutation(e.json ?? "{}")) },
    { weight: 1, arbitrary: rawJson },
    ...(jsonSeeds !== undefined ? [{ weight: 2, arbitrary: jsonSeeds.chain(jsonMutation) }] : []),
  );
  return fc.oneof(
    binary.map((body) => ({ method, encoding: "binary" as const, body })),
    json.map((text) => ({ method, encoding: "json" as const, body: utf8.encode(text) })),
  );
}

export const methods: readonly DescMethod[] = TokenService.methods;

/** Where an input goes: the gRPC listener speaks gRPC; the HTTP listener every protocol. */
export interface Route {
  readonly listener: "grpc" | "http";
  readonly protocol: RawProtocol;
  readonly http1: boolean;
}

const binaryRoutes: readonly Route[] = [
  { listener: "grpc", protocol: "grpc", http1: false },
  { listener: "grpc", protocol: "grpc", http1: false },
  { listener: "http", protocol: "grpc", http1: false },
  { listener: "http", protocol: "grpc-web", http1: true },
  { listener: "http", protocol: "connect", http1: true },
  { listener: "http", protocol: "connect", http1: false },
];
const jsonRoutes: readonly Route[] = [
  { listener: "http", protocol: "grpc+json", http1: false },
  { listener: "http", protocol: "grpc-web+json", http1: true },
  { listener: "http", protocol: "connect+json", http1: true },
  { listener: "http", protocol: "connect+json", http1: false },
];

/**
 * A JSON input goes to the HTTP listener (grpc-js speaks protobuf only: there a JSON body is one
 * more undecodable protobuf, sent as such); a binary one to either.
 */
export function routeOf(input: RpcInput, pick: number): Route {
  if (input.encoding === "json" && pick % 5 === 0) return binaryRoutes[0]!;
  const routes = input.encoding === "json" ? jsonRoutes : binaryRoutes;
  return routes[pick % routes.length]!;
}

/** The request a body holds, when it decodes (the replica decoded it when it answered OK). */
export function decodeInput(input: RpcInput): Record<string, unknown> | undefined {
  try {
    const desc = input.method.input;
    const msg =
      input.encoding === "binary"
        ? fromBinary(desc, input.body)
        : fromJsonString(desc, new TextDecoder().decode(input.body), { ignoreUnknownFields: true });
    return msg as unknown as Record<string, unknown>;
  } catch {
    return undefined;
  }
}
