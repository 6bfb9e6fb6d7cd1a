// `tokenvend token`: a valid access token from a running tokenvend, for shell scripts (as
// `gcloud auth print-access-token` is): GetToken for a grant, GetValidTokens for a session.
// The token alone on stdout; --json adds its type, expiry, scopes and generation.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { TokenService } from "../../gen/tokenvend/v1/token_service_pb.js";
import { parseDuration } from "../config.ts";
import { type Command, EXIT_FAILED, EXIT_OK, optional, UsageError } from "./command.ts";
import { printError, printResult } from "./output.ts";
import {
  clientOptions,
  describeCallError,
  requestHeaders,
  serviceClient,
  serviceUrl,
  timeoutMs,
} from "./service-client.ts";

export const token: Command = {
  name: "token",
  summary: "print a valid access token of a grant or a session",
  usage: "(--grant NAME | --session ID --provider NAME) [options]",
  description: `
Asks a running tokenvend for a valid access token and prints it alone on stdout, refreshed first
by the service when needed:

  curl -H "authorization: Bearer $(tokenvend token --grant billing-api)" https://…

Errors exit 1 with the status and its reason (NOT_FOUND (SESSION_NOT_FOUND), …) on stderr.`,
  options: {
    grant: { type: "string", value: "NAME", help: "a configured client-credentials grant" },
    session: { type: "string", value: "ID", help: "a stored session (with --provider)" },
    provider: { type: "string", value: "NAME", help: "the session's provider" },
    "min-validity": {
      type: "string",
      value: "DURATION",
      help: "the token must stay valid at least this long (5m, 1h)",
    },
    "expected-subject": {
      type: "string",
      value: "SUB",
      help: "the session's stored subject must be this",
    },
    ...clientOptions,
  },
  async run(values, io) {
    const grant = optional(values, "grant");
    const session = optional(values, "session");
    const provider = optional(values, "provider");
    if ((grant === undefined) === (session === undefined)) {
      throw new UsageError("give --grant NAME, or --session ID with --provider NAME");
    }
    if (session !== undefined && provider === undefined)
      throw new UsageError("--session needs --provider");
    const minText = optional(values, "min-validity");
    const minMs = minText === undefined ? 0 : parseDuration(minText);
    if (minMs === undefined)
      throw new UsageError(`--min-validity must be a duration such as 5m; got "${minText}"`);
    const client = serviceClient(TokenService, serviceUrl(values, io));
    const call = { headers: requestHeaders(values), timeoutMs: timeoutMs(values) };
    const minValiditySeconds = Math.ceil(minMs / 1000);
    try {
      const res =
        grant !== undefined
          ? await client.getToken({ grant, minValiditySeconds }, call)
          : await client.getValidTokens(
              {
                sessionId: session as string,
                provider: provider as string,
                minValiditySeconds,
                expectedSubject: optional(values, "expected-subject") ?? "",
              },
              call,
            );
      const c = res.credential;
      if (c === undefined) throw new Error("the answer holds no credential");
      if (values.json === true) {
        printResult(io, true, {
          accessToken: c.accessToken,
          tokenType: c.tokenType,
          expiresAt: c.expiresAt ? new Date(timestampMs(c.expiresAt)).toISOString() : undefined,
          scopes: c.scopes,
          generation: Number(c.generation),
        });
      } else {
        io.stdout.write(`${c.accessToken}\n`);
      }
      return EXIT_OK;
    } catch (err) {
      const e = describeCallError(err);
      printError(io, "token", `${e.code}${e.reason ? ` (${e.reason})` : ""}: ${e.message}`);
      return EXIT_FAILED;
    }
  },
};
