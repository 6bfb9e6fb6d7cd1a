// The store sweeper runs on the injected clock: one sweep per interval, never
// two at once, a failure logged and tried again next time, nothing after stop.

import test from "ava";
import { createFakeClock, T0 } from "../../test/support/fake-clock.ts";
import { tokens } from "../../test/support/vendor-harness.ts";
import { createMemoryStore } from "../store/memory-store.ts";
import { noopMeter } from "../telemetry/metrics.ts";
import type { Logger } from "./logger.ts";
import { startStoreSweeper } from "./store-sweeper.ts";
import { sessionKey } from "./token.ts";
import type { SweepResult, TokenStore } from "./token-store.ts";

const minute = 60_000;

function recordingLogger() {
  const lines: string[] = [];
  const at = (level: string) => (obj: object, msg?: string) => {
    lines.push(`${level} ${msg ?? ""} ${JSON.stringify(obj)}`);
  };
  const logger: Logger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
  };
  return { logger, lines };
}

/** The memory store with its sweep replaced by `sweep`, recording when each sweep ran. */
function sweeping(sweep: (now: number) => Promise<SweepResult>) {
  const runs: number[] = [];
  const store: TokenStore = {
    ...createMemoryStore(),
    sweep(now) {
      runs.push(now);
      return sweep(now);
    },
  };
  return { store, runs };
}

test("a sweep runs every interval on the injected clock and reports what it removed", async (t) => {
  const clock = createFakeClock({ nowMs: T0 });
  const inner = createMemoryStore();
  const key = sessionKey("s1", "idp");
  for (const generation of [1, 2, 3]) {
    await inner.insert({ key, generation, reason: "stored", tokens: tokens() });
  }
  const { store, runs } = sweeping((now) => inner.sweep(now));
  const { logger, lines } = recordingLogger();
  const signal = new AbortController().signal;
  const sweeper = startStoreSweeper({
    store,
    clock,
    intervalMs: minute,
    logger,
    meter: noopMeter,
    signal,
  });
  await clock.advance(minute - 1);
  t.deepEqual(runs, []);
  await clock.advance(1);
  t.deepEqual(runs, [T0 + minute]);
  t.deepEqual(lines, ['debug swept the store {"generations":2,"claims":0}']);
  await clock.advance(minute);
  t.deepEqual(runs, [T0 + minute, T0 + 2 * minute]);
  t.is(lines.length, 1, "a sweep that removed nothing logs nothing");
  sweeper.stop();
  await clock.advance(10 * minute);
  t.is(runs.length, 2);
  t.is(clock.pendingTimers(), 0);
});

test("a slow sweep is never overlapped; a failed one is logged and the next runs an interval later", async (t) => {
  const clock = createFakeClock({ nowMs: T0 });
  let finish: ((r: SweepResult) => void) | undefined;
  let fail = false;
  const { store, runs } = sweeping(() => {
    if (fail) return Promise.reject(new Error("connection reset"));
    return new Promise<SweepResult>((resolve) => {
      finish = resolve;
    });
  });
  const { logger, lines } = recordingLogger();
  const signal = new AbortController().signal;
  startStoreSweeper({ store, clock, intervalMs: minute, logger, meter: noopMeter, signal });
  await clock.advance(3 * minute);
  t.is(runs.length, 1, "the first sweep is still running");
  fail = true;
  finish?.({ generations: 0, claims: 0 });
  await clock.advance(minute);
  t.deepEqual(runs, [T0 + minute, T0 + 4 * minute]);
  t.deepEqual(lines, ['warn sweep failed {"err":"connection reset"}']);
  await clock.advance(minute);
  t.is(runs.length, 3, "tried again after the failure");
});

test("nothing is armed once the service's signal aborted", async (t) => {
  const clock = createFakeClock({ nowMs: T0 });
  const { store, runs } = sweeping(async () => ({ generations: 0, claims: 0 }));
  const service = new AbortController();
  startStoreSweeper({
    store,
    clock,
    intervalMs: minute,
    logger: recordingLogger().logger,
    meter: noopMeter,
    signal: service.signal,
  });
  await clock.advance(minute);
  service.abort();
  await clock.advance(5 * minute);
  t.is(runs.length, 1);
  t.is(clock.pendingTimers(), 0);
});
