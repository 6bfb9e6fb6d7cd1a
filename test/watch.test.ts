// WatchToken on one replica over real @grpc/grpc-js streams: latest-value
// delivery to slow subscribers, and nothing left behind by churn.

import { setTimeout as sleep } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import test from "ava";
import { RenewalReason } from "../gen/tokenvend/v1/token_service_pb.js";
import { grpcFailure, startStack } from "./support/stack.ts";

const target = (sessionId: string) => ({
  target: { case: "session" as const, value: { sessionId, provider: "idp" } },
});

test("a paused subscriber does not delay a fast one, and ends up holding the latest token", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const minted = await s.mint();
  await s.store("sess-slow", minted, 300);
  const fast = s.client.watch(target("sess-slow"));
  const slow = s.client.watch(target("sess-slow"));
  t.teardown(() => fast.cancel());
  t.teardown(() => slow.cancel());
  const fi = fast.messages[Symbol.asyncIterator]();
  const si = slow.messages[Symbol.asyncIterator]();
  t.is((await fi.next()).value?.credential?.generation, 1n);
  t.is((await si.next()).value?.credential?.generation, 1n);
  slow.call.pause();

  // Twenty new logins in a row; the fast stream sees each before the next is stored.
  for (let g = 2; g <= 21; g++) {
    await s.store("sess-slow", { ...minted, accessToken: `at-${g}` }, 300);
    const m = await fi.next();
    t.is(m.value?.credential?.generation, BigInt(g));
    t.is(m.value?.reason, RenewalReason.STORED);
  }
  slow.call.resume();
  let last: bigint | undefined;
  let token: string | undefined;
  const seen: bigint[] = [];
  while (last !== 21n) {
    const m = await si.next();
    if (m.done === true) return t.fail(`the stream ended after generation ${last}`);
    last = m.value?.credential?.generation;
    token = m.value?.credential?.accessToken;
    if (last !== undefined) seen.push(last);
  }
  t.is(token, "at-21");
  // Strictly increasing: skipped generations are fine, repeats and reorderings are not.
  t.true(
    seen.every((g, i) => i === 0 || g > seen[i - 1]!),
    seen.join(","),
  );
});

test("1,000 subscribe/cancel cycles leave no stream, watcher or timer behind", async (t) => {
  // Faster than the default per-caller rate of WatchToken calls: the limit is raised.
  const s = await startStack({
    config: { limits: { callers: { rpcs: { WatchToken: 100_000 } } } },
  });
  t.teardown(s.stop);
  await s.store("sess-churn", await s.mint(), 300);
  for (let i = 0; i < 1_000; i++) {
    const w = s.client.watch(target("sess-churn"));
    const it = w.messages[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.value?.credential?.generation !== 1n) t.fail(`cycle ${i}: no first message`);
    w.cancel();
    await it.next().catch(() => undefined);
  }
  for (let i = 0; i < 100 && s.server.vendor.stats().streams > 0; i++) await sleep(20);
  const st = s.server.vendor.stats();
  t.deepEqual(
    { streams: st.streams, watchers: st.watchers, timers: st.timers },
    { streams: 0, watchers: 0, timers: 0 },
  );
});

test("a stream that cannot start ends with its code and ErrorInfo on the gRPC listener, and the server keeps serving", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  await s.store("sess-bound", await s.mint(), 300);
  const firstError = async (req: Parameters<typeof s.client.watch>[0]) => {
    const w = s.client.watch(req);
    const err = await t.throwsAsync(async () => {
      for await (const _ of w.messages) t.fail("no message expected");
    });
    return grpcFailure(err);
  };
  t.deepEqual(await firstError({}), {
    code: status.INVALID_ARGUMENT,
    reason: "INVALID_ARGUMENT",
    fields: ["target"],
  });
  t.deepEqual(
    await firstError({
      target: { case: "session", value: { sessionId: "sess-none", provider: "idp" } },
    }),
    { code: status.NOT_FOUND, reason: "SESSION_NOT_FOUND", fields: [] },
  );
  t.deepEqual(
    await firstError({
      target: {
        case: "session",
        value: { sessionId: "sess-bound", provider: "idp", expectedSubject: "someone-else" },
      },
    }),
    { code: status.PERMISSION_DENIED, reason: "INVALID_BINDING", fields: [] },
  );
  t.deepEqual(await firstError({ target: { case: "grant", value: "nope" } }), {
    code: status.NOT_FOUND,
    reason: "GRANT_NOT_FOUND",
    fields: ["grant"],
  });
  // None of the failed streams holds a slot, and streams are still served.
  t.is(s.server.vendor.stats().streams, 0);
  const ok = s.client.watch(target("sess-bound"));
  const first = await ok.messages[Symbol.asyncIterator]().next();
  t.is(first.value?.credential?.generation, 1n);
  t.is(s.server.vendor.stats().streams, 1);
  ok.cancel();
});
