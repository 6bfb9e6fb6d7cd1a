// What bench/cluster.ts measures with: CPU of a process tree from /proc, the commands a counting
// proxy saw over a window, call latencies and their summary.

import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { ServerProcess } from "../test/support/server-process.ts";
import type { CountingProxy } from "./mongo-proxy.ts";

const TICK_HZ = 100; // /proc clock ticks per second (USER_HZ on Linux)

export interface Window {
  /** The database's CPU, % of one core. */
  dbCpu: number;
  /** The three replicas' CPU together, % of one core. */
  replicaCpu: number;
  commandsPerS: number;
  /** The commands/s of each command name. */
  byName: Record<string, number>;
}

export async function measure(
  dbPid: number,
  replicas: ServerProcess[],
  proxy: CountingProxy,
  ms: number,
  work: () => Promise<void>,
): Promise<Window> {
  const pids = replicas.map((r) => r.child.pid as number);
  const db0 = treeTicks(dbPid);
  const r0 = pids.reduce((s, p) => s + treeTicks(p), 0);
  const c0 = proxy.counts();
  const t0 = performance.now();
  await Promise.all([work(), sleep(ms)]);
  const seconds = (performance.now() - t0) / 1000;
  const c1 = proxy.counts();
  const byName: Record<string, number> = {};
  let total = 0;
  for (const [name, n] of c1) {
    const d = n - (c0.get(name) ?? 0);
    if (d > 0) byName[name] = round(d / seconds, 2);
    total += d;
  }
  return {
    dbCpu: round(((treeTicks(dbPid) - db0) / TICK_HZ / seconds) * 100, 1),
    replicaCpu: round(
      ((pids.reduce((s, p) => s + treeTicks(p), 0) - r0) / TICK_HZ / seconds) * 100,
      1,
    ),
    commandsPerS: round(total / seconds, 2),
    byName,
  };
}

/** CPU ticks of a process and its descendants, the reaped ones included (cutime, cstime). */
function treeTicks(pid: number): number {
  if (pid === 0) return Number.NaN;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return 0;
  }
  const f = stat
    .slice(stat.lastIndexOf(")") + 2)
    .split(" ")
    .map(Number);
  // Fields 14-17 of stat (utime, stime, cutime, cstime) are 11-14 after the command.
  let ticks = (f[11] ?? 0) + (f[12] ?? 0) + (f[13] ?? 0) + (f[14] ?? 0);
  for (const task of safeList(`/proc/${pid}/task`)) {
    let children = "";
    try {
      children = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8");
    } catch {}
    for (const child of children.split(/\s+/).filter(Boolean)) ticks += treeTicks(Number(child));
  }
  return ticks;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export async function timed(n: number, concurrency: number, call: (i: number) => Promise<unknown>) {
  const latencies: number[] = [];
  const started = performance.now();
  let errors = 0;
  await pool(n, concurrency, async (i) => {
    const t = performance.now();
    try {
      await call(i);
      latencies.push(performance.now() - t);
    } catch {
      errors++;
    }
  });
  return {
    perS: round(latencies.length / ((performance.now() - started) / 1000), 1),
    errors,
    ...summary(latencies),
  };
}

export async function pool(n: number, concurrency: number, work: (i: number) => Promise<unknown>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, concurrency) }, async () => {
      while (next < n) await work(next++);
    }),
  );
}

export function summary(ms: number[]) {
  const s = [...ms].sort((x, y) => x - y);
  const q = (p: number) =>
    round(s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN, 1);
  return { n: s.length, p50: q(0.5), p99: q(0.99), max: round(s[s.length - 1] ?? Number.NaN, 1) };
}

export const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
