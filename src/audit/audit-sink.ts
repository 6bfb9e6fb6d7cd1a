// The audit stream: one JSON line per decision and per token-bearing operation,
// apart from the service log, to stdout or a file. Session ids appear only as
// an HMAC under the audit key (searchable by whoever holds the key, never in
// clear); records carry no token material (callers of write() pass none, and
// every string field is bounded). With failClosed a record is written
// synchronously and a failed write throws, so the call it describes is refused;
// without it, lines are buffered and a failed write is reported, not fatal.

import { createHmac } from "node:crypto";
import { closeSync, createWriteStream, openSync, writeSync } from "node:fs";
import type { Writable } from "node:stream";

/** One audit record; absent fields are left out of the line. */
export interface AuditRecord {
  /** What happened: a call's decision, a refresh, a revocation at a provider, a config load... */
  readonly event: "call" | "refresh" | "revocation" | "login" | "exchange" | "keyring" | "config";
  readonly caller?: string | undefined;
  readonly authMethod?: string | undefined;
  readonly peer?: string | undefined;
  readonly rpc?: string | undefined;
  readonly provider?: string | undefined;
  readonly grant?: string | undefined;
  /** A session id in clear: the sink writes its HMAC instead. */
  readonly sessionId?: string | undefined;
  readonly decision?: "allow" | "deny" | undefined;
  readonly rule?: string | undefined;
  readonly reason?: string | undefined;
  /** "OK" or the gRPC status name the operation ended with. */
  readonly outcome?: string | undefined;
  readonly generation?: number | undefined;
  readonly traceId?: string | undefined;
  /** Anything else this kind of event carries (a config digest, key ids). */
  readonly details?: Readonly<Record<string, string | number | boolean | readonly string[]>>;
}

export type AuditTarget =
  | { readonly kind: "stdout" }
  | { readonly kind: "file"; readonly path: string };

export interface AuditSinkOptions {
  readonly target: AuditTarget;
  /** The HMAC key for session ids (at least 32 bytes). */
  readonly hmacKey: Uint8Array;
  readonly failClosed: boolean;
  readonly now: () => number;
  /** Told about a failed write when not failClosed (the service log). */
  readonly onError: (err: unknown) => void;
}

export interface AuditSink {
  readonly failClosed: boolean;
  /** Writes one record; with failClosed, throws AuditUnavailableError when it cannot. */
  write(record: AuditRecord): void;
  /** The searchable form of a session id: hex HMAC-SHA256 under the audit key. */
  sessionRef(sessionId: string): string;
  close(): Promise<void>;
}

export class AuditUnavailableError extends Error {
  override readonly name = "AuditUnavailableError";
}

const maxFieldChars = 512;

export function createAuditSink(opts: AuditSinkOptions): AuditSink {
  if (opts.hmacKey.byteLength < 32)
    throw new RangeError("the audit HMAC key must be at least 32 bytes");
  const key = Buffer.from(opts.hmacKey);
  const sessionRef = (id: string) => createHmac("sha256", key).update(id, "utf8").digest("hex");
  const line = (r: AuditRecord) => {
    const out: Record<string, unknown> = { time: new Date(opts.now()).toISOString(), audit: true };
    for (const [k, v] of Object.entries(r)) {
      if (v === undefined) continue;
      if (k === "sessionId") out.session = sessionRef(v as string);
      else
        out[k] = typeof v === "string" && v.length > maxFieldChars ? v.slice(0, maxFieldChars) : v;
    }
    return `${JSON.stringify(out)}\n`;
  };
  const write = opts.failClosed
    ? syncWriter(opts.target)
    : bufferedWriter(opts.target, opts.onError);
  return {
    failClosed: opts.failClosed,
    sessionRef,
    write: (r) => write.write(line(r)),
    close: () => write.close(),
  };
}

interface LineWriter {
  write(line: string): void;
  close(): Promise<void>;
}

/** Each line written before write() returns; a failure throws (and the next write retries). */
function syncWriter(target: AuditTarget): LineWriter {
  let fd: number | undefined = target.kind === "stdout" ? 1 : undefined;
  return {
    write(line) {
      try {
        if (fd === undefined && target.kind === "file") fd = openSync(target.path, "a", 0o600);
        const buf = Buffer.from(line, "utf8");
        let off = 0;
        let spins = 0;
        while (off < buf.length) {
          try {
            off += writeSync(fd as number, buf, off);
          } catch (err) {
            // A non-blocking pipe (stdout) that is full: wait for it, briefly.
            if ((err as NodeJS.ErrnoException).code !== "EAGAIN" || ++spins > 1000) throw err;
          }
        }
      } catch (err) {
        if (target.kind === "file" && fd !== undefined) {
          closeQuietly(fd);
          fd = undefined;
        }
        throw new AuditUnavailableError("the audit record could not be written", { cause: err });
      }
    },
    async close() {
      if (target.kind === "file" && fd !== undefined) closeQuietly(fd);
      fd = undefined;
    },
  };
}

function closeQuietly(fd: number) {
  try {
    closeSync(fd);
  } catch {
    // Already gone.
  }
}

/** Lines handed to a stream; its errors go to onError. */
function bufferedWriter(target: AuditTarget, onError: (err: unknown) => void): LineWriter {
  let stream: Writable;
  if (target.kind === "stdout") {
    stream = process.stdout;
  } else {
    stream = createWriteStream(target.path, { flags: "a", mode: 0o600 });
    stream.on("error", onError);
  }
  return {
    write(line) {
      if (!stream.destroyed) stream.write(line);
      else onError(new AuditUnavailableError("the audit file is closed after an error"));
    },
    close() {
      if (target.kind === "stdout" || stream.destroyed) return Promise.resolve();
      return new Promise<void>((resolve) => stream.end(resolve));
    },
  };
}
