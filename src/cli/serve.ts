// `tokenvend serve` (what `npm start` runs) and `tokenvend dev` (`npm run dev`): a replica, run by
// src/main.ts. The telemetry preload (src/telemetry/register.ts) is loaded first, before anything
// that imports the MongoDB driver or fetch, so `tokenvend serve` started through the bin gets the
// same instrumentation as `node --import ./src/telemetry/register.ts` (one module: it runs once).

import { type Command, configOption, type Values } from "./command.ts";
import { commandEnv } from "./configured.ts";

async function start(dev: boolean, values: Values, io: Parameters<Command["run"]>[1]) {
  await import("../telemetry/register.ts");
  const { runService } = await import("../main.ts");
  await runService({ dev, env: commandEnv(values, io) });
  return "running" as const;
}

export const serve: Command = {
  name: "serve",
  summary: "run a replica (what npm start runs)",
  usage: "[--config FILE]",
  description: `
Runs tokenvend with the configuration of TOKENVEND_CONFIG (or --config) and the environment:
the gRPC and Connect/HTTP listeners, the store of MONGODB_URI or TOKENVEND_DATA_DIR (memory
otherwise), tokens preloaded from the bootstrap file, telemetry from OTEL_*. SIGTERM or SIGINT
drains and exits 0. A bad configuration exits 2, naming the option; a failed start exits 1.`,
  options: { config: configOption },
  run: (values, io) => start(false, values, io),
};

export const dev: Command = {
  name: "dev",
  summary: "run a development replica: embedded IdP, demo grant and session (npm run dev)",
  usage: "",
  description: `
Runs tokenvend for development: the memory store, an in-process identity provider (oidc-provider),
a client-credentials grant "demo", a stored session "demo-session" at provider "local", and
caller authentication off. It prints grpcurl and curl examples. Never expose it. With
TOKENVEND_CONFIG set it runs that configuration instead of the embedded one.`,
  options: {},
  run: (values, io) => start(true, values, io),
};
