// What CompleteAuthorization does with the tokens once the provider issued them, and how the
// flows' state store failing reaches a caller. The provider side is scripted (a redeemed code's
// tokens at an exact moment); the whole flow runs against the real oidc-provider in
// test/authorization-flow.test.ts.

import test from "ava";
import { createFakeClock } from "../../test/support/fake-clock.ts";
import { flowSettings, flowTestLifetime as lifetime } from "../../test/support/flow-settings.ts";
import { createMemoryFlowStates } from "../store/flow-state-memory.ts";
import { createMongoFlowStates } from "../store/flow-state-mongo.ts";
import { createKeyring } from "../store/sealing.ts";
import { createAuthorizationFlow } from "./authorization-flow.ts";
import { classifiedFlowStates } from "./classified-store.ts";
import { isTokenVendError, TokenVendError } from "./errors.ts";
import type { FlowStateStore } from "./flow-state-store.ts";
import type { FlowUpstream } from "./flow-upstream.ts";
import { noopLogger } from "./logger.ts";
import type { StoreTokensInput } from "./session-writes.ts";

const redirectUri = "https://app.example/cb";

/** A flow whose store answers as `storeTokens` says, on a fake clock. */
function harness(
  storeTokens: (input: StoreTokensInput) => Promise<number>,
  states: FlowStateStore = createMemoryFlowStates(),
) {
  const clock = createFakeClock();
  const upstream: Pick<FlowUpstream, "authorizationRequest" | "redeemCode"> = {
    async authorizationRequest() {
      return { url: "https://idp.example/auth", state: "st", codeVerifier: "v", nonce: undefined };
    },
    async redeemCode() {
      return { accessToken: "at", refreshToken: "rt", tokenType: "Bearer", expiresInSec: 300 };
    },
  };
  const flow = createAuthorizationFlow({
    states: classifiedFlowStates(states),
    upstream: upstream as FlowUpstream,
    providers: new Map([
      ["idp", flowSettings({ redirectUris: [redirectUri], authorizationScopes: ["api"] })],
    ]),
    lifetimeOf: () => lifetime,
    storeTokens,
    clock,
    logger: noopLogger,
    signal: new AbortController().signal,
    upstreamTimeoutMs: 1_000,
    stateTtlMs: 600_000,
  });
  const start = () => flow.start({ sessionId: "s", provider: "idp", redirectUri, scopes: [] });
  return { clock, flow, start };
}

test("a redeemed login is stored even when its caller leaves while the store is down", async (t) => {
  const stored: StoreTokensInput[] = [];
  let downFor = 3;
  const h = harness(async (input) => {
    if (downFor-- > 0) throw new TokenVendError("STORE_UNAVAILABLE", "store down");
    stored.push(input);
    return 1;
  });
  const { state } = await h.start();
  const caller = new AbortController();
  const completing = h.flow.complete({ state, code: "c" }, caller.signal);
  await h.clock.advance(500);
  caller.abort(new Error("the caller left"));
  await t.throwsAsync(completing, { message: "the caller left" });
  await h.clock.advance(60_000);
  t.is(stored.length, 1, "retried in the background until written");
  t.like(stored[0]?.tokens, { accessToken: "at", refreshToken: "rt" });
});

test("a login the store refuses for good (not an outage) is not retried", async (t) => {
  let attempts = 0;
  const h = harness(async () => {
    attempts++;
    throw new TokenVendError("PERMISSION_DENIED", "not yours", { reason: "NOT_OWNER" });
  });
  const { state } = await h.start();
  const err = await h.flow.complete({ state, code: "c" }).catch((e: unknown) => e);
  t.true(isTokenVendError(err, "PERMISSION_DENIED"));
  await h.clock.advance(60_000);
  t.is(attempts, 1);
});

test("a flow-state store that does not answer is STORE_UNAVAILABLE, not an internal error", async (t) => {
  // A real MongoDB client towards a port nothing listens on.
  const states = createMongoFlowStates({
    client: "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300",
    dbName: "unreachable",
    keyring: createKeyring([{ id: "a", key: Buffer.alloc(32, 1) }]),
  });
  t.teardown(() => states.close());
  const h = harness(async () => 1, states);
  const err = await h.start().catch((e: unknown) => e);
  t.true(isTokenVendError(err, "STORE_UNAVAILABLE"), String(err));
  const complete = await h.flow.complete({ state: "st", code: "c" }).catch((e: unknown) => e);
  t.true(isTokenVendError(complete, "STORE_UNAVAILABLE"), String(complete));
});
