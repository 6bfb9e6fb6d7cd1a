// A client of a running tokenvend for `token` and `health`: gRPC (connect-node's gRPC transport)
// to the address given, else to where the configuration says the gRPC listener is. Errors are
// read the way every client reads them: the status code and the ErrorInfo reason.

import { createFileRegistry, type DescService } from "@bufbuild/protobuf";
import { type Client, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { parseDuration } from "../config.ts";
import { grpcStatusNames } from "../rpc/rpc-interceptor.ts";
import { healthFile } from "../transport/health-descriptor.ts";
import { formatHostPort, parseHostPort } from "../transport/index.ts";
import {
  type Io,
  jsonOption,
  type OptionSpec,
  optional,
  UsageError,
  type Values,
} from "./command.ts";
import { loadCommandConfig } from "./configured.ts";

export const clientOptions: Record<string, OptionSpec> = {
  address: {
    type: "string",
    value: "HOST:PORT",
    help: "the gRPC listener (default: TOKENVEND_GRPC_LISTEN, else the config's grpc.listen); https://HOST:PORT for TLS",
  },
  header: {
    type: "string",
    value: "'NAME: VALUE'",
    multiple: true,
    help: "a request header, such as an authorization header",
  },
  timeout: { type: "string", value: "DURATION", help: "give up after this long (default 10s)" },
  config: { type: "string", value: "FILE", help: "read the gRPC address from this config" },
  json: jsonOption,
};

/** The base URL of the service's gRPC listener. */
export function serviceUrl(values: Values, io: Io): string {
  const given = optional(values, "address") ?? (io.env.TOKENVEND_GRPC_LISTEN || undefined);
  if (given !== undefined && /^https?:\/\//.test(given)) return given;
  let listen = given;
  if (listen === undefined) {
    try {
      listen = loadCommandConfig(values, io).grpcListen;
    } catch (err) {
      throw new UsageError(
        `give --address: the configuration does not load (${(err as Error).message})`,
      );
    }
  }
  const hp = parseHostPort(listen, given !== undefined ? "--address" : "grpc.listen");
  // A listener on every interface is reached on loopback.
  const host = hp.host === "0.0.0.0" ? "127.0.0.1" : hp.host === "::" ? "::1" : hp.host;
  return `http://${formatHostPort({ host, port: hp.port })}`;
}

export function timeoutMs(values: Values): number {
  const t = optional(values, "timeout");
  if (t === undefined) return 10_000;
  const ms = parseDuration(t);
  if (ms === undefined || ms <= 0)
    throw new UsageError(`--timeout must be a duration such as 5s; got "${t}"`);
  return ms;
}

export function requestHeaders(values: Values): Headers {
  const headers = new Headers();
  const list = values.header;
  for (const h of Array.isArray(list) ? list : []) {
    const colon = h.indexOf(":");
    if (colon <= 0)
      throw new UsageError(`--header must be 'NAME: VALUE'; got a value without a name`);
    headers.append(h.slice(0, colon).trim(), h.slice(colon + 1).trim());
  }
  return headers;
}

export function serviceClient<S extends DescService>(service: S, url: string): Client<S> {
  return createClient(service, createGrpcTransport({ baseUrl: url }));
}

const healthRegistry = createFileRegistry(healthFile(), () => undefined);
const HealthService = healthRegistry.getService("grpc.health.v1.Health") as DescService;
const servingStatus = healthRegistry.getEnum("grpc.health.v1.HealthCheckResponse.ServingStatus");

/** grpc.health.v1.Health/Check: the status's name (SERVING, NOT_SERVING, …). */
export async function healthCheck(
  url: string,
  service: string,
  call: { headers: Headers; timeoutMs: number },
): Promise<string> {
  const client = serviceClient(HealthService, url) as unknown as {
    check(req: { service: string }, opts: typeof call): Promise<{ status: number }>;
  };
  const res = await client.check({ service }, call);
  return servingStatus?.values.find((v) => v.number === res.status)?.name ?? String(res.status);
}

/** "NOT_FOUND (SESSION_NOT_FOUND): message" for a failed call; the message never holds tokens. */
export function describeCallError(err: unknown): {
  code: string;
  reason?: string;
  message: string;
} {
  const e = ConnectError.from(err);
  const info = e.findDetails(ErrorInfoSchema)[0];
  const code = codeName(e.code);
  return { code, ...(info !== undefined ? { reason: info.reason } : {}), message: e.rawMessage };
}

const codeName = (code: number) => grpcStatusNames[code] ?? String(code);
