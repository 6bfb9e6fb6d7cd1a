// A promise-based @grpc/grpc-js client for a protobuf-es service descriptor: the
// same stubs any Node caller would build from proto/, used against the gRPC listener.

import {
  type DescMessage,
  type DescService,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

export interface GrpcCallError extends Error {
  code: grpc.status;
  details: string;
  metadata: grpc.Metadata;
}

type Unary<I extends DescMessage, O extends DescMessage> = (
  req: MessageShape<I>,
  opts?: { metadata?: Record<string, string>; deadlineMs?: number },
) => Promise<MessageShape<O>>;

export interface GrpcJsClient {
  unary<I extends DescMessage, O extends DescMessage>(
    method: string,
    input: I,
    output: O,
  ): Unary<I, O>;
  /** Opens a server stream; iterate it, or call cancel(). */
  stream<I extends DescMessage, O extends DescMessage>(
    method: string,
    input: I,
    output: O,
    req: MessageShape<I>,
    opts?: { metadata?: Record<string, string> },
  ): {
    messages: AsyncIterable<MessageShape<O>>;
    call: grpc.ClientReadableStream<MessageShape<O>>;
    cancel(): void;
  };
  close(): void;
}

/** `metadata` goes with every call (credentials); a call's own metadata adds to it. */
export function createGrpcJsClient(
  service: DescService,
  address: string,
  metadata: Record<string, string> = {},
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  options: grpc.ClientOptions = {},
): GrpcJsClient {
  const client = new grpc.Client(address, credentials, options);
  const path = (method: string) => `/${service.typeName}/${method}`;
  const meta = (m?: Record<string, string>) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries({ ...metadata, ...m })) md.set(k, v);
    return md;
  };
  return {
    unary(method, input, output) {
      return (req, opts) =>
        new Promise((resolve, reject) => {
          const options: grpc.CallOptions = {};
          if (opts?.deadlineMs !== undefined) options.deadline = Date.now() + opts.deadlineMs;
          client.makeUnaryRequest(
            path(method),
            (m: MessageShape<typeof input>) => Buffer.from(toBinary(input, m)),
            (b: Buffer) => fromBinary(output, b),
            req,
            meta(opts?.metadata),
            options,
            (err, res) => (err ? reject(err) : resolve(res as MessageShape<typeof output>)),
          );
        });
    },
    stream(method, input, output, req, opts) {
      const call = client.makeServerStreamRequest(
        path(method),
        (m: MessageShape<typeof input>) => Buffer.from(toBinary(input, m)),
        (b: Buffer) => fromBinary(output, b),
        req,
        meta(opts?.metadata),
      );
      return {
        call,
        messages: call as AsyncIterable<MessageShape<typeof output>>,
        cancel: () => call.cancel(),
      };
    },
    close: () => client.close(),
  };
}
