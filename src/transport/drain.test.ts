// The one drain every listener runs: what happens within the grace, after it, and when nothing ends.

import { Code, ConnectError } from "@connectrpc/connect";
import test from "ava";
import { createListenerDrain } from "./drain.ts";

function steps(finish: "at once" | "after the abort" | "never") {
  const log: string[] = [];
  const done = Promise.withResolvers<void>();
  if (finish === "at once") done.resolve();
  const d = createListenerDrain({
    stopAccepting() {
      log.push("stop accepting");
      return done.promise;
    },
    forceClose() {
      log.push("force close");
      done.resolve();
    },
  });
  d.shutdownSignal.addEventListener("abort", () => {
    const r = d.shutdownSignal.reason as ConnectError;
    log.push(`abort ${Code[r.code]}: ${r.rawMessage}`);
    if (finish === "after the abort") done.resolve();
  });
  return { d, log };
}

test("a drain whose calls finish within the grace neither aborts nor forces anything", async (t) => {
  const { d, log } = steps("at once");
  await d.drain(1_000);
  t.deepEqual(log, ["stop accepting"]);
  t.false(d.shutdownSignal.aborted);
});

test("calls still running after the grace are aborted with UNAVAILABLE; those that end then are not forced", async (t) => {
  const { d, log } = steps("after the abort");
  await d.drain(10);
  t.deepEqual(log, ["stop accepting", "abort Unavailable: the server is shutting down"]);
  t.true(d.shutdownSignal.reason instanceof ConnectError);
});

test("what is still open after the abort's flush is forced closed; a second drain is the same one", async (t) => {
  const { d, log } = steps("never");
  const first = d.drain(10);
  t.is(d.drain(5_000), first);
  await first;
  t.deepEqual(log, [
    "stop accepting",
    "abort Unavailable: the server is shutting down",
    "force close",
  ]);
});
