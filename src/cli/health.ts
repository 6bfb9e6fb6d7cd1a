// `tokenvend health`: the gRPC health check (grpc.health.v1.Health/Check) of a running
// tokenvend, for scripts and exec probes. Exit 0 when SERVING, 1 otherwise (NOT_SERVING while it
// drains, unreachable, unknown service).

import { type Command, EXIT_FAILED, EXIT_OK, optional } from "./command.ts";
import { printError, printResult } from "./output.ts";
import {
  clientOptions,
  describeCallError,
  healthCheck,
  requestHeaders,
  serviceUrl,
  timeoutMs,
} from "./service-client.ts";

export const health: Command = {
  name: "health",
  summary: "check a running tokenvend's gRPC health (exit 0 when SERVING)",
  usage: "[--service NAME] [--address HOST:PORT] [--json]",
  description: `
Calls grpc.health.v1.Health/Check and prints the status: SERVING (exit 0), or NOT_SERVING,
SERVICE_UNKNOWN or the call's error (exit 1). The service "" is the whole server;
tokenvend.v1.TokenService turns NOT_SERVING as soon as a replica starts draining.`,
  options: {
    service: {
      type: "string",
      value: "NAME",
      help: 'the service to check (default "": the server)',
    },
    ...clientOptions,
  },
  async run(values, io) {
    const service = optional(values, "service") ?? "";
    const url = serviceUrl(values, io);
    const json = values.json === true;
    try {
      const status = await healthCheck(url, service, {
        headers: requestHeaders(values),
        timeoutMs: timeoutMs(values),
      });
      if (json) printResult(io, true, { address: url, service, status });
      else io.stdout.write(`${status}\n`);
      return status === "SERVING" ? EXIT_OK : EXIT_FAILED;
    } catch (err) {
      const e = describeCallError(err);
      if (json)
        printResult(io, true, { address: url, service, status: e.code, message: e.message });
      printError(io, "health", `${e.code}: ${e.message}`);
      return EXIT_FAILED;
    }
  },
};
