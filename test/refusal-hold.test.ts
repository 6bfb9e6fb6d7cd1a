// Refusals by a per-caller limit are held before they are answered (auth/caller-limits.ts):
// between their retry delay and twice it, at most limits.callers.refusalHold, at most half of the
// call's time left, at most maxHeldRefusals at once; the retry delay answered is what is left.
// Through the wire: a client that retries on every refusal is paced by them, and a call with a
// short deadline still gets its RESOURCE_EXHAUSTED.

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import test from "ava";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { GetValidTokensRequestSchema, TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import { createCallerLimits, LimitError } from "../src/auth/index.ts";
import { startStack } from "./support/stack.ts";

const limitsOf = (o: { hold: number; maxHeld?: number; random?: () => number }) =>
  createCallerLimits({
    requestsPerSecond: 1,
    methods: new Map(),
    maxStreams: 1,
    newSessionsPerSecond: 1,
    failuresPerSecond: 0,
    refusalHoldMs: o.hold,
    maxHeldRefusals: o.maxHeld ?? 100,
    random: o.random ?? (() => 0.99),
  });

/** Settles `p`; its LimitError and when it settled (performance.now()). */
const refusalOf = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error("expected a refusal");
    },
    (e: unknown) => {
      if (!(e instanceof LimitError)) throw e;
      return { err: e, at: performance.now() };
    },
  );

test("a refusal is held (at most refusalHold) and answers with the retry delay left", async (t) => {
  const l = limitsOf({ hold: 200 });
  await l.call("c", "M");
  const start = performance.now();
  const refused = refusalOf(l.call("c", "M"));
  await new Promise((r) => setTimeout(r, 20));
  t.is(l.held(), 1);
  const { err, at } = await refused;
  t.is(l.held(), 0);
  // The window had ~1 s left: the hold is the cap.
  t.true(at - start >= 190, `held ${at - start} ms`);
  t.is(err.limit, "rate");
  t.true(err.retryAfterMs >= 1 && err.retryAfterMs <= 800, `${err.retryAfterMs} ms left`);
  t.regex(err.message, new RegExp(`try again in ${err.retryAfterMs} ms$`));
});

test("refusalHold 0 answers at once, with the whole retry delay", async (t) => {
  const l = limitsOf({ hold: 0 });
  await l.call("c", "M");
  const heldOne = limitsOf({ hold: 1_000 });
  await heldOne.call("c", "M");
  const held = refusalOf(heldOne.call("c", "M"));
  const { err, at } = await refusalOf(l.call("c", "M"));
  t.is(l.held(), 0);
  t.true(err.retryAfterMs > 500, `${err.retryAfterMs} ms`);
  t.true(at < (await held).at, "answered before a held refusal");
});

test("beyond maxHeldRefusals, refusals are answered at once; a deadline halves the hold", async (t) => {
  const l = limitsOf({ hold: 1_000, maxHeld: 1 });
  await l.call("a", "M");
  await l.call("b", "M");
  await l.call("c", "M");
  const first = refusalOf(l.call("a", "M"));
  const second = refusalOf(l.call("b", "M"));
  await new Promise((r) => setTimeout(r, 20));
  t.is(l.held(), 1, "one held, at most");
  const [a, b] = await Promise.all([first, second]);
  t.true(b.at < a.at, "the second was not held");
  t.true(b.err.retryAfterMs > 500);
  // With 100 ms left before its deadline, a refusal is held at most 50 ms.
  const d = limitsOf({ hold: 1_000 });
  await d.call("c", "M");
  const long = refusalOf(d.hold(new LimitError("rate", "x", 900)));
  const short = await refusalOf(d.call("c", "M", () => 100));
  t.true(short.at < (await long).at, "the call with a deadline was answered first");
});

test("the hold falls between the retry delay and twice it, spread by `random`", async (t) => {
  for (const [random, min] of [
    [0, 100],
    [0.5, 150],
  ] as const) {
    const l = limitsOf({ hold: 1_000, random: () => random });
    const start = performance.now();
    const { err, at } = await refusalOf(l.hold(new LimitError("streams", "full", 100)));
    t.true(at - start >= min - 5, `random ${random}: held ${at - start} ms`);
    t.is(err.limit, "streams");
    t.is(err.retryAfterMs, 1, "nothing left to wait");
  }
});

const getValid = (c: ReturnType<typeof clientOf>, timeoutMs?: number) =>
  c.getValidTokens(create(GetValidTokensRequestSchema, { sessionId: "nobody", provider: "idp" }), {
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  });
const clientOf = (baseUrl: string, grpc: boolean) =>
  createClient(
    TokenService,
    grpc
      ? createGrpcTransport({ baseUrl })
      : createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  );

for (const grpc of [true, false]) {
  const name = grpc ? "gRPC listener" : "HTTP listener (Connect)";
  test(`${name}: a client retrying on every refusal is paced by the holds; a short deadline still gets RESOURCE_EXHAUSTED`, async (t) => {
    const s = await startStack({
      config: {
        limits: { callers: { rpcs: { GetValidTokens: 5 }, refusalHold: "300ms" } },
      },
    });
    t.teardown(s.stop);
    const c = clientOf(grpc ? `http://${s.grpcAddress}` : s.httpUrl, grpc);
    const codes: (Code | "ok")[] = [];
    const until = Date.now() + 1_500;
    while (Date.now() < until) {
      codes.push(
        await getValid(c).then(
          () => "ok" as const,
          (e: unknown) => ConnectError.from(e).code,
        ),
      );
    }
    const refused = codes.filter((x) => x === Code.ResourceExhausted).length;
    t.true(refused >= 1, `${codes.length} calls`);
    // Unheld, one client sends hundreds in 1.5 s; held, at most ~5 a second are served and each
    // refusal takes ≥ its retry delay (up to 300 ms).
    t.true(codes.length <= 40, `${codes.length} calls (${refused} refused)`);
    // A call whose deadline is near gets its refusal, not DEADLINE_EXCEEDED: sent behind more
    // calls than the window has left (again if the window turned over in between).
    let code: Code | "ok" = "ok";
    for (let i = 0; i < 4; i++) {
      const burst = Array.from({ length: 8 }, () => getValid(c).catch(() => undefined));
      const err = await getValid(c, 250).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      await Promise.all(burst);
      code = err?.code ?? "ok";
      if (code === Code.NotFound) continue;
      t.truthy(err?.findDetails(RetryInfoSchema)[0]?.retryDelay);
      break;
    }
    t.is(code, Code.ResourceExhausted);
  });
}
