// The export file: every key's active generation, sealed, one text line per chunk.
//
//   line 1        {"format":"tokenvend-export","version":1,"createdAt":…,"sealing":…,"source":…}
//   lines 2…n+1   one chunk each: a sealed value (store/sealing.ts) of {"records":[TokenRecord…]}
//   last line     a sealed {"end":{"records":…,"sessions":…,"grants":…,"revoked":…}}
//
// The header is plain (it says how the rest is sealed: export key id or scrypt parameters, never
// a secret); everything else is sealed. Each sealed line binds, as associated data, the header's
// SHA-256, its own position and whether it is the end, so a file whose header was altered, whose
// lines were reordered, dropped or copied from another export, or that was cut short, does not
// read. Records are the domain's TokenRecord as JSON, whatever fields it has: a field added to the
// record later is exported and imported without a change here.

import { createHash } from "node:crypto";
import { createInterface } from "node:readline";
import type { TokenRecord } from "../core/token.ts";
import { type Keyring, SealingError } from "../store/sealing.ts";
import type { ExportSealing } from "./export-key.ts";
import { parseRecord } from "./record-json.ts";

export const EXPORT_FORMAT = "tokenvend-export";
export const EXPORT_VERSION = 1;

export interface ExportHeader {
  readonly format: typeof EXPORT_FORMAT;
  readonly version: typeof EXPORT_VERSION;
  /** ISO 8601. */
  readonly createdAt: string;
  readonly sealing: ExportSealing;
  /** Which adapter the records came from (informational). */
  readonly source: { readonly store: string };
}

/** What an export holds, counted by key; the end line carries it and import checks it. */
export interface ExportCounts {
  readonly records: number;
  /** Session keys whose active generation holds tokens. */
  readonly sessions: number;
  /** Grant keys whose active generation holds tokens. */
  readonly grants: number;
  /** Keys whose active generation is a revocation (no tokens). */
  readonly revoked: number;
}

/** The header of a new export. */
export function exportHeader(sealing: ExportSealing, sourceStore: string, now: Date): ExportHeader {
  return {
    format: EXPORT_FORMAT,
    version: EXPORT_VERSION,
    createdAt: now.toISOString(),
    sealing,
    source: { store: sourceStore },
  };
}

export class ExportFormatError extends Error {
  override readonly name = "ExportFormatError";
}

const aad = (headerDigest: string, index: number, end: boolean) =>
  `${EXPORT_FORMAT}#${headerDigest}#${index}#${end ? "end" : "records"}`;
const digest = (line: string) => createHash("sha256").update(line).digest("base64url");

export function countRecords(records: readonly TokenRecord[], into?: ExportCounts): ExportCounts {
  let {
    records: n,
    sessions,
    grants,
    revoked,
  } = into ?? {
    records: 0,
    sessions: 0,
    grants: 0,
    revoked: 0,
  };
  for (const r of records) {
    n++;
    if (r.reason === "revoked") revoked++;
    else if (r.key.kind === "session") sessions++;
    else grants++;
  }
  return { records: n, sessions, grants, revoked };
}

export interface ExportWriter {
  /** Seals and writes one chunk. */
  write(records: readonly TokenRecord[]): Promise<void>;
  /** Writes the end line; the file is complete only after it. */
  end(): Promise<ExportCounts>;
}

export function createExportWriter(
  out: NodeJS.WritableStream,
  opts: { keyring: Keyring; header: ExportHeader },
): ExportWriter {
  const headerLine = JSON.stringify(opts.header);
  const headerDigest = digest(headerLine);
  let index = 0;
  let counts = countRecords([]);
  const put = (line: string) =>
    new Promise<void>((resolve, reject) => {
      out.write(`${line}\n`, (err) => (err ? reject(err) : resolve()));
    });
  let started = put(headerLine);
  return {
    async write(records) {
      await started;
      index++;
      started = put(
        opts.keyring.seal(JSON.stringify({ records }), aad(headerDigest, index, false)),
      );
      counts = countRecords(records, counts);
      await started;
    },
    async end() {
      await started;
      index++;
      await put(opts.keyring.seal(JSON.stringify({ end: counts }), aad(headerDigest, index, true)));
      return counts;
    },
  };
}

export type ExportItem =
  | { readonly kind: "records"; readonly records: TokenRecord[] }
  | { readonly kind: "end"; readonly counts: ExportCounts };

/**
 * Reads an export: the header first (given to `keyringFor`, which returns the keyring that opens
 * it), then each chunk's records, then the end with its counts, checked against what was read.
 * Throws ExportFormatError on anything malformed, altered, reordered or cut short.
 */
export async function* readExport(
  input: NodeJS.ReadableStream,
  keyringFor: (header: ExportHeader) => Promise<Keyring>,
): AsyncGenerator<ExportItem, void, undefined> {
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })[
    Symbol.asyncIterator
  ]();
  const first = await lines.next();
  if (first.done === true) throw new ExportFormatError("the file is empty: not an export");
  const header = parseHeader(first.value);
  const headerDigest = digest(first.value);
  const keyring = await keyringFor(header);
  let index = 0;
  let counts = countRecords([]);
  for (;;) {
    const next = await lines.next();
    if (next.done === true) {
      throw new ExportFormatError(
        `the export ends after ${counts.records} records without its end line: it was cut short`,
      );
    }
    index++;
    const body = open(keyring, next.value, headerDigest, index);
    if (body.end !== undefined) {
      if (!sameCounts(body.end, counts)) {
        throw new ExportFormatError(
          `the export's end line counts ${JSON.stringify(body.end)}, but ${JSON.stringify(counts)} were read`,
        );
      }
      if ((await lines.next()).done !== true) {
        throw new ExportFormatError("the export has lines after its end line");
      }
      yield { kind: "end", counts };
      return;
    }
    const records = body.records.map((r, i) => parseRecord(r, `chunk ${index}, record ${i + 1}`));
    counts = countRecords(records, counts);
    yield { kind: "records", records };
  }
}

function parseHeader(line: string): ExportHeader {
  let h: unknown;
  try {
    h = JSON.parse(line);
  } catch {
    throw new ExportFormatError("the first line is not JSON: not a tokenvend export");
  }
  const o = h as Partial<ExportHeader> | null;
  if (o?.format !== EXPORT_FORMAT) {
    throw new ExportFormatError("the first line is not a tokenvend export header");
  }
  if (o.version !== EXPORT_VERSION) {
    throw new ExportFormatError(
      `the export has version ${String(o.version)}; this tokenvend reads version ${EXPORT_VERSION}`,
    );
  }
  const s = o.sealing as Record<string, unknown> | undefined;
  const valid =
    (s?.kind === "key" && typeof s.keyId === "string") ||
    (s?.kind === "passphrase" &&
      s.kdf === "scrypt" &&
      typeof s.salt === "string" &&
      [s.N, s.r, s.p].every((v) => Number.isSafeInteger(v)));
  if (!valid) throw new ExportFormatError("the export header's sealing is malformed");
  return o as ExportHeader;
}

function open(
  keyring: Keyring,
  line: string,
  headerDigest: string,
  index: number,
): { records: unknown[]; end?: undefined } | { end: ExportCounts; records?: undefined } {
  let text: string | undefined;
  let end = false;
  for (const asEnd of [false, true]) {
    try {
      text = keyring.open(line, aad(headerDigest, index, asEnd));
      end = asEnd;
      break;
    } catch (err) {
      if (!(err instanceof SealingError)) throw err;
      if (err.code !== "DECRYPT_FAILED" || asEnd) {
        throw new ExportFormatError(
          err.code === "DECRYPT_FAILED"
            ? `line ${index + 1} does not open: the wrong key or passphrase, or the file was altered or reordered`
            : `line ${index + 1}: ${err.message}`,
        );
      }
    }
  }
  const body = JSON.parse(text as string) as { records?: unknown; end?: ExportCounts };
  if (end) return { end: body.end as ExportCounts };
  if (!Array.isArray(body.records)) {
    throw new ExportFormatError(`line ${index + 1} holds no records`);
  }
  return { records: body.records };
}

function sameCounts(a: ExportCounts, b: ExportCounts): boolean {
  return (
    a.records === b.records &&
    a.sessions === b.sessions &&
    a.grants === b.grants &&
    a.revoked === b.revoked
  );
}
