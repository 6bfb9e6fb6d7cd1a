// How commands answer: a result on stdout (JSON with --json, else readable lines), progress and
// errors on stderr. Progress on a terminal is one line rewritten in place; elsewhere (a log, CI)
// a line at most every few seconds, so a long run shows it is alive without flooding the log.

import { stringify as toYaml } from "yaml";
import type { Io } from "./command.ts";

/** Prints `result` as JSON (--json) or as YAML-like readable text after an optional headline. */
export function printResult(io: Io, json: boolean, result: object, headline?: string): void {
  if (json) {
    io.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  if (headline !== undefined) io.stdout.write(`${headline}\n`);
  io.stdout.write(toYaml(result, { indent: 2 }));
}

export function printError(io: Io, command: string, message: string): void {
  io.stderr.write(`tokenvend ${command}: ${message}\n`);
}

export interface Progress {
  update(text: string): void;
  done(): void;
}

const LOG_EVERY_MS = 5_000;

export function createProgress(io: Io, label: string, now: () => number = Date.now): Progress {
  const tty = io.stderr.isTTY === true;
  let last = Number.NEGATIVE_INFINITY;
  let pending: string | undefined;
  return {
    update(text) {
      if (tty) {
        io.stderr.write(`\r\u001b[2K${label}: ${text}`);
        return;
      }
      pending = text;
      if (now() - last >= LOG_EVERY_MS) {
        io.stderr.write(`${label}: ${text}\n`);
        last = now();
        pending = undefined;
      }
    },
    done() {
      if (tty) io.stderr.write("\r\u001b[2K");
      else if (pending !== undefined) io.stderr.write(`${label}: ${pending}\n`);
    },
  };
}
