// Building the upstream client from a plain record of providers, and awaiting
// the UpstreamError a call must fail with (anything else fails the test).

import { inspect } from "node:util";
import { UpstreamError } from "../../src/core/upstream.ts";
import {
  createUpstreamClient,
  type UpstreamClientOptions,
  type UpstreamProviderConfig,
} from "../../src/idp/upstream-client.ts";

export function client(
  providers: Record<string, UpstreamProviderConfig>,
  extra: Omit<UpstreamClientOptions, "providers"> = {},
) {
  return createUpstreamClient({ providers: new Map(Object.entries(providers)), ...extra });
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
