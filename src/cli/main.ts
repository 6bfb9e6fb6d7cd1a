#!/usr/bin/env -S node --max-semi-space-size=4
// `tokenvend`: the operator's command (package.json's bin; `npx tokenvend …` in a checkout or the
// image). One subcommand per file, loaded only when it runs: `serve` must load the telemetry
// preload before the MongoDB driver, and no command pays for another's imports.

import {
  type Command,
  EXIT_FAILED,
  EXIT_OK,
  EXIT_USAGE,
  helpOf,
  type Io,
  parseOptions,
  UsageError,
} from "./command.ts";

/** Each command, loaded only when it runs (or for the overview). */
const commands: Record<string, () => Promise<Command>> = {
  serve: async () => (await import("./serve.ts")).serve,
  dev: async () => (await import("./serve.ts")).dev,
  "check-config": async () => (await import("./check-config.ts")).checkConfig,
  keygen: async () => (await import("./keygen.ts")).keygen,
  reencrypt: async () => (await import("./reencrypt.ts")).reencrypt,
  export: async () => (await import("./export.ts")).exportCommand,
  import: async () => (await import("./import.ts")).importCommand,
  token: async () => (await import("./token.ts")).token,
  health: async () => (await import("./health.ts")).health,
};

async function overview(): Promise<string> {
  const all = await Promise.all(Object.values(commands).map((load) => load()));
  const width = Math.max(...all.map((c) => c.name.length)) + 2;
  return [
    "Usage: tokenvend COMMAND [options]",
    "",
    "The token-vending service and its operator tools. `tokenvend COMMAND --help` for each.",
    "",
    "Commands:",
    ...all.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    "Exit codes: 0 done, 1 the operation failed, 2 bad usage or configuration.",
    "",
  ].join("\n");
}

/** Runs `tokenvend ARGV…`; resolves with the exit code, or "running" for serve and dev. */
export async function runCli(argv: readonly string[], io: Io): Promise<number | "running"> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    const topic = name === "help" ? rest[0] : undefined;
    if (topic === undefined || commands[topic] === undefined) {
      (name === undefined ? io.stderr : io.stdout).write(await overview());
      return name === undefined ? EXIT_USAGE : EXIT_OK;
    }
    io.stdout.write(helpOf(await commands[topic]()));
    return EXIT_OK;
  }
  const load = commands[name];
  if (load === undefined) {
    io.stderr.write(`tokenvend: unknown command "${name}"\n\n${await overview()}`);
    return EXIT_USAGE;
  }
  const cmd = await load();
  try {
    const values = parseOptions(cmd, rest);
    if (values.help === true) {
      io.stdout.write(helpOf(cmd));
      return EXIT_OK;
    }
    return await cmd.run(values, io);
  } catch (err) {
    const { message, exitCode } = await failure(name, err);
    io.stderr.write(`tokenvend ${name}: ${message}\n`);
    if (err instanceof UsageError)
      io.stderr.write(`Run 'tokenvend ${name} --help' for its options.\n`);
    return exitCode;
  }
}

async function failure(name: string, err: unknown): Promise<{ message: string; exitCode: number }> {
  if (err instanceof UsageError) return { message: err.message, exitCode: EXIT_USAGE };
  const { startFailure, withCause } = await import("../main.ts");
  const { ExportKeyError } = await import("../ops/export-key.ts");
  if (err instanceof ExportKeyError) return { message: err.message, exitCode: EXIT_USAGE };
  const described = startFailure(err);
  if (described.exitCode !== EXIT_FAILED || name === "serve" || name === "dev") return described;
  // Not a start: say what failed, and what underneath.
  return { message: withCause(err), exitCode: EXIT_FAILED };
}

if (import.meta.main) {
  const code = await runCli(process.argv.slice(2), {
    env: process.env,
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    cwd: process.cwd(),
  });
  // A replica that could not start may hold listeners or connections open: it exits at once.
  // The other commands let stdout drain first (an export may be writing to a pipe).
  if (code !== "running" && ["serve", "dev"].includes(process.argv[2] ?? "")) process.exit(code);
  if (code !== "running") process.exitCode = code;
}
