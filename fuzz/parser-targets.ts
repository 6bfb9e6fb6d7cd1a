// The parsers that read what tokenvend does not control: the config (YAML text and values), a
// duration, the encryption keys, a sealed value, the file store's state file and a provider's
// Retry-After. Each target is a fast-check arbitrary (generated and mutated from valid seeds and
// the corpus in fuzz/corpus/<target>/) and a check: the parser returns a value of the documented
// shape or throws its own documented error, never anything else (a TypeError, a RangeError, a
// hang), and the sealed value opens only in its own place.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import fc from "fast-check";
import { stringify as toYaml } from "yaml";
import { ConfigError, loadConfig, parseDuration } from "../src/config.ts";
import { sessionKey } from "../src/core/token.ts";
import { parseRetryAfterMs } from "../src/idp/retry-after.ts";
import { generateKey, parseKeyring, parseKeys, SealingError } from "../src/store/sealing.ts";
import { loadState, stateText } from "../src/store/state-file.ts";
import { StoreError } from "../src/store/store-error.ts";
import { toDocument } from "../src/store/token-document.ts";
import { attribute, type Coverage } from "./coverage.ts";

export interface ParserTarget {
  readonly name: string;
  /** Inputs as text (every target reads text); `corpus` entries are mutated too. */
  arbitrary(corpus: readonly string[]): fc.Arbitrary<string>;
  /**
   * Throws (an Error saying what broke) when the parser broke its contract on `input`; else what
   * happened, in a few words ("ok", or the documented error and the start of its message).
   */
  check(input: string): string | undefined | Promise<string | undefined>;
  /** Releases what the target made (temp files). */
  close?(): void;
}

/** Text mutations of a seed: cut, spliced, a character replaced, duplicated. */
function mutated(seed: string): fc.Arbitrary<string> {
  const at = (n: number) => (seed.length === 0 ? 0 : n % seed.length);
  return fc.oneof(
    fc.nat().map((n) => seed.slice(0, at(n))),
    fc
      .tuple(fc.nat(), fc.string({ unit: "binary", minLength: 1, maxLength: 8 }))
      .map(([n, s]) => `${seed.slice(0, at(n))}${s}${seed.slice(at(n))}`),
    fc
      .tuple(fc.nat(), fc.string({ unit: "binary", minLength: 1, maxLength: 1 }))
      .map(([n, s]) => `${seed.slice(0, at(n))}${s}${seed.slice(at(n) + 1)}`),
    fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => {
      const [i, j] = [at(a), at(b)].sort((x, y) => x - y);
      return `${seed.slice(0, j)}${seed.slice(i, j)}${seed.slice(j)}`;
    }),
  );
}

/** Generated text, seeds and mutations of both. */
function textInputs(seeds: readonly string[], generated: fc.Arbitrary<string>) {
  const pool = seeds.length > 0 ? fc.constantFrom(...seeds) : generated;
  return fc.oneof(
    { weight: 2, arbitrary: generated },
    { weight: 1, arbitrary: pool },
    { weight: 4, arbitrary: pool.chain(mutated) },
  );
}

/** Runs `f`; an error that is not one of `allowed` breaks the contract. */
async function only(
  allowed: readonly (new (...a: never[]) => Error)[],
  f: () => unknown,
): Promise<string> {
  try {
    await f();
    return "ok";
  } catch (err) {
    if (allowed.some((c) => err instanceof c)) {
      const e = err as Error & { code?: unknown };
      const words = e.message.replace(/"[^"]*"|\d+/g, "").replace(/[^A-Za-z ]/g, "");
      return `${e.name} ${String(e.code ?? "")} ${words.slice(0, 40)}`;
    }
    throw new Error(`threw ${(err as Error)?.name ?? typeof err}: ${(err as Error)?.message}`, {
      cause: err,
    });
  }
}

/** A parser of milliseconds that never throws: undefined, or a finite number ≥ 0. */
function millisTarget(
  name: string,
  seeds: readonly string[],
  generated: fc.Arbitrary<string>,
  parse: (input: string) => number | undefined,
): ParserTarget {
  return {
    name,
    arbitrary: (corpus) => textInputs([...seeds, ...corpus], generated),
    check(input) {
      const ms = parse(input);
      if (ms !== undefined && !(Number.isFinite(ms) && ms >= 0)) {
        throw new Error(`${name} parsed ${JSON.stringify(input)} as ${ms}`);
      }
      return ms === undefined ? "undefined" : ms === 0 ? "zero" : "ms";
    },
  };
}

const durationTarget = millisTarget(
  "duration",
  ["30s", "1h30m", "250ms", "1.5s", "7d", "0s"],
  fc.oneof(fc.stringMatching(/^(\d{0,20}(\.\d{0,5})?(ms|s|m|h|d)?){0,4}$/), fc.string()),
  parseDuration,
);

const retryAfterTarget = millisTarget(
  "retry-after",
  ["120", "0", "Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT"],
  fc.oneof(
    fc.stringMatching(/^\s*\d{0,400}\s*$/),
    fc.string(),
    fc.date().map((d) => d.toUTCString()),
  ),
  (input) => parseRetryAfterMs(input, 1_700_000_000_000),
);

const keysTarget: ParserTarget = {
  name: "keys",
  arbitrary: (corpus) =>
    textInputs(
      [`primary:${generateKey()}`, `a:${generateKey()},b:${generateKey()}`, ...corpus],
      fc.string(),
    ),
  check: (input) =>
    only([SealingError], () => {
      const keys = parseKeys(input);
      if (keys.length === 0 || keys.some((k) => k.key.length !== 32)) {
        throw new Error("parseKeys returned a key that is not 32 bytes");
      }
    }),
};

/** A sealed value opens only with its own associated data, and a changed one never opens. */
function sealedTarget(): ParserTarget {
  const ring = parseKeyring(`k1:${generateKey()},k2:${generateKey()}`);
  const aad = "s\u001fidp\u001fseed-0#1#access";
  const plaintext = "at-fuzz-plaintext";
  const sealed = ring.seal(plaintext, aad);
  return {
    name: "sealed-value",
    arbitrary: (corpus) => textInputs([sealed, ...corpus], fc.string()),
    check: (input) =>
      only([SealingError], () => {
        const opened = ring.open(input, aad);
        // Base64url may spell the same bytes two ways at its end; any other change must not open.
        if (
          opened === plaintext &&
          input !== sealed &&
          input.slice(0, -2) !== sealed.slice(0, -2)
        ) {
          throw new Error("a changed sealed value opened");
        }
        if (opened !== plaintext) throw new Error("a sealed value opened to something else");
        let elsewhere = false;
        try {
          ring.open(input, `${aad}x`);
          elsewhere = true;
        } catch {}
        if (elsewhere) throw new Error("a sealed value opened under another document's key");
      }),
  };
}

/** The file store's loader, over state files written to a temp directory. */
function fileStoreTarget(): ParserTarget {
  const dir = mkdtempSync(path.join(tmpdir(), "tokenvend-fuzz-"));
  const file = path.join(dir, "tokens.json");
  const ring = parseKeyring(`k1:${generateKey()}`);
  const now = 1_700_000_000_000;
  const docs = ["seed-0", "seed-1"].map((sessionId, i) =>
    toDocument(
      {
        key: sessionKey(sessionId, "idp"),
        generation: i + 1,
        reason: "stored",
        tokens: {
          accessToken: `at-${i}`,
          refreshToken: `rt-${i}`,
          tokenType: "Bearer",
          scopes: ["openid"],
          issuedAt: now,
          expiresAt: now + 3_600_000,
          subject: "alice",
        },
      },
      ring,
      now,
    ),
  );
  const valid = stateText(docs);
  return {
    name: "file-store",
    arbitrary: (corpus) => textInputs([valid, ...corpus], fc.json({ maxDepth: 4 })),
    async check(input) {
      writeFileSync(file, input);
      return only([StoreError, SealingError], async () => {
        const loaded = await loadState(file, ring);
        if (!Array.isArray(loaded)) throw new Error("loadState returned no list");
      });
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The config, as YAML text: mutated valid configs and generated values at its options. */
function configTarget(): ParserTarget {
  const base = {
    grpc: { listen: "127.0.0.1:50051", maxConcurrentStreams: 100, keepaliveTime: "1m" },
    http: { listen: "127.0.0.1:8080", headersTimeout: "10s", requestTimeout: "30s" },
    health: { listen: "127.0.0.1:50052", maxWatches: 10 },
    logLevel: "info",
    maxMessageBytes: 131072,
    maxProviderResponseBytes: 65536,
    providers: {
      idp: {
        issuer: "https://login.example.com",
        clientId: "tokenvend",
        clientSecretEnv: "IDP_SECRET",
        authMethod: "client_secret_basic",
        lifetime: { freshness: 0.75, clockSkew: "30s" },
        backoff: { initial: "1s", max: "1m", jitter: 0.2 },
      },
    },
    grants: { demo: { provider: "idp", scopes: ["api:read"] } },
    auth: { disabled: true },
  };
  const paths: string[][] = [];
  const walk = (o: unknown, at: string[]) => {
    if (typeof o !== "object" || o === null) return;
    for (const [k, v] of Object.entries(o)) {
      paths.push([...at, k]);
      walk(v, [...at, k]);
    }
  };
  walk(base, []);
  const withValue = fc
    .tuple(fc.constantFrom(...paths), fc.anything({ maxDepth: 2 }))
    .map(([p, v]) => {
      const copy = structuredClone(base) as Record<string, unknown>;
      let o = copy;
      for (const k of p.slice(0, -1)) o = o[k] as Record<string, unknown>;
      o[p.at(-1)!] = v;
      return toYaml(copy);
    });
  return {
    name: "config",
    arbitrary: (corpus) => textInputs([toYaml(base), ...corpus], withValue),
    check: (input) =>
      only([ConfigError], () =>
        loadConfig({
          env: { TOKENVEND_CONFIG: "/config.yaml", IDP_SECRET: "s3cret" },
          readFile: (p) => (p === "/config.yaml" ? input : "file-secret"),
        }),
      ),
  };
}

export function parserTargets(): ParserTarget[] {
  return [
    configTarget(),
    durationTarget,
    keysTarget,
    sealedTarget(),
    fileStoreTarget(),
    retryAfterTarget,
  ];
}

export interface ParserFuzzReport {
  readonly name: string;
  readonly runs: number;
  /** The smallest failing input fast-check found and what broke; undefined when none. */
  readonly failure: { readonly input: string; readonly error: string } | undefined;
  readonly seconds: number;
  /** Guided runs: inputs that ran blocks of src/ no earlier input had; the blocks they ran. */
  readonly newCoverage: number;
  readonly blocks: number;
}

/** Inputs per round of a guided run: each round mutates the pool as the last rounds grew it. */
const guidedRound = 250;
/** Inputs between two coverage readings. */
const guidedBatch = 32;
/** The most inputs a guided run keeps in its pool (the first ones). */
const maxPool = 2_000;

/**
 * `runs` inputs through every target (each with its corpus entries), stopping at a failure.
 * With `coverage`, guided: an input that runs new blocks of src/ joins the pool that later
 * inputs are mutated from (fuzz/coverage.ts).
 */
export async function fuzzParsers(opts: {
  readonly runs: number;
  readonly seed: number;
  readonly corpus?: ReadonlyMap<string, readonly string[]>;
  readonly targets?: readonly ParserTarget[];
  /** Called for an input whose outcome is new for its target. */
  readonly onNewOutcome?: (target: string, input: string) => void;
  readonly coverage?: Coverage;
  /** Called for an input that ran blocks of src/ that no earlier input ran. */
  readonly onNewCoverage?: (target: string, input: string) => void;
}): Promise<ParserFuzzReport[]> {
  const targets = opts.targets ?? parserTargets();
  const cov = opts.coverage;
  const out: ParserFuzzReport[] = [];
  try {
    for (const target of targets) {
      const started = performance.now();
      const seen = new Set<string>();
      const pool = [...(opts.corpus?.get(target.name) ?? [])];
      let runs = 0;
      let newCoverage = 0;
      let failure: ParserFuzzReport["failure"];
      const recent: string[] = [];
      /** The inputs of `recent` that ran new blocks join the pool. */
      const found = () =>
        attribute(
          cov!,
          recent.splice(0),
          async (input) => target.check(input),
          (input) => {
            newCoverage++;
            if (pool.length < maxPool) pool.push(input);
            opts.onNewCoverage?.(target.name, input);
          },
        );
      await cov?.fresh(); // what ran before this target is not its own
      const blocksBefore = cov?.blocks ?? 0;
      for (let round = 0; runs < opts.runs && failure === undefined; round++) {
        const result = await fc.check(
          fc.asyncProperty(target.arbitrary(pool), async (input) => {
            const outcome = String(await target.check(input));
            if (!seen.has(outcome)) {
              seen.add(outcome);
              opts.onNewOutcome?.(target.name, input);
            }
            if (cov !== undefined) {
              recent.push(input);
              if (recent.length >= guidedBatch) await found();
            }
          }),
          {
            numRuns: cov !== undefined ? Math.min(guidedRound, opts.runs - runs) : opts.runs,
            seed: opts.seed + round,
          },
        );
        if (cov !== undefined) await found();
        runs += result.numRuns;
        if (result.failed) {
          failure = {
            input: String(result.counterexample?.[0]),
            error: String((result.errorInstance as Error | undefined)?.message),
          };
        }
      }
      out.push({
        name: target.name,
        runs,
        failure,
        seconds: (performance.now() - started) / 1000,
        newCoverage,
        blocks: (cov?.blocks ?? 0) - blocksBefore,
      });
    }
  } finally {
    for (const t of targets) t.close?.();
  }
  return out;
}
