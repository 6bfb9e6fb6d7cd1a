// Building the upstream client from a plain record of providers, and awaiting
// the UpstreamError a call must fail with (anything else fails the test).

import { inspect } from "node:util";
import { configDefaults } from "../../src/config-defaults.ts";
import { UpstreamError } from "../../src/core/upstream.ts";
import {
  createUpstreamClient,
  type UpstreamClientOptions,
  type UpstreamProviderConfig,
} from "../../src/idp/upstream-client.ts";

/** What the client is given when a test names no cap: the configured default. */
export const responseCap = configDefaults.transportLimits.maxProviderResponseBytes;

export type ClientExtra = Partial<Omit<UpstreamClientOptions, "providers">>;

export function client(providers: Record<string, UpstreamProviderConfig>, extra: ClientExtra = {}) {
  return createUpstreamClient({
    providers: new Map(Object.entries(providers)),
    maxResponseBytes: responseCap,
    ...extra,
  });
}

export async function upstreamError(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof UpstreamError)) {
    throw new Error(`expected an UpstreamError, got ${inspect(err)}`);
  }
  return err;
}
