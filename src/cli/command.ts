// What a subcommand of `tokenvend` is: its options (node:util's parseArgs, strict), its help
// text, and a run that returns the exit code. Exit codes are the same for every subcommand:
//
//   0  done
//   1  the operation failed (unreachable service, NOT_SERVING, refused preflight, mismatches)
//   2  bad usage or invalid configuration (the message names the flag or option)

import { parseArgs } from "node:util";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** What a command reads and writes; main passes the process's, tests their own. */
export interface Io {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stdin: NodeJS.ReadableStream;
  readonly cwd: string;
}

export interface OptionSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
  /** Shown in help: the value's name (`FILE`) for string options. */
  readonly value?: string;
  readonly help: string;
}

export type Values = Record<string, string | boolean | string[] | undefined>;

export interface Command {
  readonly name: string;
  /** One line, for `tokenvend --help`. */
  readonly summary: string;
  /** The usage line after `tokenvend NAME`. */
  readonly usage: string;
  /** Paragraphs after the usage line. */
  readonly description: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** The exit code, or "running" for a command that keeps the process alive (serve, dev). */
  run(values: Values, io: Io): Promise<number | "running">;
}

/** A usage error: exit 2, with the message and a pointer to --help. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

export const jsonOption: OptionSpec = {
  type: "boolean",
  help: "print the result as one JSON object",
};
export const configOption: OptionSpec = {
  type: "string",
  value: "FILE",
  help: "the service's YAML config (default: $TOKENVEND_CONFIG); the environment overrides it as for serve",
};
const helpOption: OptionSpec = { type: "boolean", short: "h", help: "show this help" };

/** Parses argv for `cmd`; `--help` is every command's. Throws UsageError. */
export function parseOptions(cmd: Command, argv: readonly string[]): Values {
  const options = { ...cmd.options, help: helpOption };
  try {
    const { values } = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        Object.entries(options).map(([name, o]) => [
          name,
          {
            type: o.type,
            ...(o.short !== undefined ? { short: o.short } : {}),
            ...(o.multiple ? { multiple: true } : {}),
          },
        ]),
      ),
      strict: true,
      allowPositionals: false,
    });
    return values as Values;
  } catch (err) {
    // parseArgs's messages name the flag ("Unknown option '--outt'").
    throw new UsageError((err as Error).message.replace(/\. To specify.*$/s, ""));
  }
}

/** The help text of one command. */
export function helpOf(cmd: Command): string {
  const options = { ...cmd.options, help: helpOption };
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    return [flag, `${o.help}${o.multiple ? " (repeatable)" : ""}`] as const;
  });
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  return [
    `Usage: tokenvend ${cmd.name} ${cmd.usage}`.trimEnd(),
    "",
    cmd.description.trim(),
    "",
    "Options:",
    ...rows.map(([f, h]) => `  ${f.padEnd(width)}${h}`),
    "",
  ].join("\n");
}

/** A string option that must be given. */
export function required(values: Values, name: string): string {
  const v = values[name];
  if (typeof v !== "string" || v === "") throw new UsageError(`--${name} is required`);
  return v;
}

/** A string option, or undefined. */
export function optional(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** A positive integer option. */
export function positive(values: Values, name: string, dflt: number): number {
  const v = optional(values, name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new UsageError(`--${name} must be a positive integer; got "${v}"`);
  }
  return n;
}
