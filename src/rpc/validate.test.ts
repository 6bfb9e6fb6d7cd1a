// The request rules of validate.ts, one kind of field at a time, at their edges: what passes,
// what is refused and with which description (never the value).

import { create } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import test from "ava";
import { limits, textProblem, Violations } from "./validate.ts";

const problems = (fill: (v: Violations) => Violations) =>
  fill(new Violations()).list.map((x) => `${x.field}: ${x.description}`);

test("Unicode text: plain ASCII, names with accents, CJK and emoji in NFC pass", (t) => {
  for (const ok of [
    "alice",
    "auth0|5f7c8ec7",
    "client with spaces inside",
    "jürgen",
    "Zoë Ωmega",
    "山田太郎",
    "😀 smile",
    "x".repeat(limits.bindingMaxChars),
  ]) {
    t.is(textProblem(ok), undefined, JSON.stringify(ok));
    t.deepEqual(
      problems((v) => v.text("subject", ok, limits.bindingMaxChars)),
      [],
    );
  }
});

test("Unicode text: control, invisible, bidi, replacement and odd white-space characters are refused", (t) => {
  const invisible =
    "must not contain control, invisible, replacement or non-space white-space characters";
  for (const [name, bad] of [
    ["NUL", "a\u0000b"],
    ["tab", "a\tb"],
    ["newline (log injection)", "alice\nlevel=admin"],
    ["DEL", "a\u007fb"],
    ["C1 control", "a\u0085b"],
    ["right-to-left override (Trojan Source)", "admin\u202egnp.exe"],
    ["left-to-right isolate", "\u2066alice\u2069"],
    ["right-to-left mark", "alice\u200f"],
    ["Arabic letter mark", "a\u061cb"],
    ["zero-width space", "ali\u200bce"],
    ["zero-width joiner", "ali\u200dce"],
    ["byte-order mark", "\ufeffalice"],
    ["soft hyphen", "ali\u00adce"],
    ["tag character", "alice\u{e0041}"],
    ["variation selector", "alice\ufe0f"],
    ["Hangul filler", "alice\u3164"],
    ["no-break space", "alice\u00a0smith"],
    ["ideographic space", "alice\u3000smith"],
    ["line separator", "alice\u2028bob"],
    ["paragraph separator", "alice\u2029bob"],
    ["replacement character (undecodable bytes)", "alic\ufffd"],
    ["noncharacter", "alice\uffff"],
    ["noncharacter in the Arabic block", "alice\ufdd0"],
    ["lone high surrogate", "alice\ud800"],
    ["lone low surrogate", "\udc00alice"],
  ]) {
    t.is(textProblem(bad as string), invisible, name as string);
  }
});

test("Unicode text: not in NFC is refused, not normalized; a space at either end is refused", (t) => {
  const decomposed = "ju\u0308rgen"; // ü as u + combining diaeresis
  t.not(decomposed, decomposed.normalize("NFC"));
  t.deepEqual(
    problems((v) => v.text("subject", decomposed, 256)),
    ["subject: must be in Unicode normalization form NFC"],
  );
  t.is(textProblem(decomposed.normalize("NFC")), undefined);
  // A compatibility character in NFC passes (NFKC would change it): compared as sent.
  t.is(textProblem("ﬁle"), undefined);
  t.is(textProblem(" alice"), "must not start or end with a space");
  t.is(textProblem("alice "), "must not start or end with a space");
  t.deepEqual(
    problems((v) => v.text("client_id", "x".repeat(257), 256)),
    ["client_id: longer than 256 characters"],
  );
  t.deepEqual(
    problems((v) => v.text("client_id", "", 256)),
    [],
    "empty: not given",
  );
});

test("session ids, names, tokens, scopes and token types are ASCII by their RFCs", (t) => {
  t.deepEqual(
    problems((v) =>
      v
        .sessionId("session_id", "sess-ü")
        .sessionId("s2", "a b")
        .sessionId("s3", "x".repeat(257))
        .sessionId("s4", "ok!#$%&'()*+,-./:;<=>?@[]^_`{|}~")
        .name("provider", "corp/evil")
        .name("grant", "café")
        .token("access_token", "tok\u00e9n", true)
        .token("refresh_token", "", false)
        .typeName("token_type", "Bearer")
        .typeName("t2", "N_A")
        .typeName("t3", "Bear er")
        .scopes("scopes", ["openid", 'say"hi', "back\\slash", "ü", ""]),
    ),
    [
      "session_id: must be printable ASCII without spaces",
      "s2: must be printable ASCII without spaces",
      "s3: longer than 256 characters",
      "provider: must be letters, digits, '.', '_' or '-'",
      "grant: must be letters, digits, '.', '_' or '-'",
      "access_token: must be printable ASCII without spaces",
      "t3: must be letters, digits, '.', '_' or '-'",
      `scopes[1]: must be 1–256 printable ASCII characters without spaces, '"' or '\\'`,
      `scopes[2]: must be 1–256 printable ASCII characters without spaces, '"' or '\\'`,
      `scopes[3]: must be 1–256 printable ASCII characters without spaces, '"' or '\\'`,
      `scopes[4]: must be 1–256 printable ASCII characters without spaces, '"' or '\\'`,
    ],
  );
});

test("URLs are absolute http(s) and ASCII: an IRI is refused, its percent-encoded form passes", (t) => {
  t.deepEqual(
    problems((v) =>
      v
        .url("redirect_uri", "https://app.example/callback?x=1", true)
        .url("u2", "https://app.example/caf%C3%A9", true)
        .url("u3", "https://app.example/café", true)
        .url("u4", "javascript:alert(1)", true)
        .url("u5", "/relative", true)
        .url("u6", "", true),
    ),
    [
      "u3: must be printable ASCII (percent-encode the rest)",
      "u4: must be an absolute http(s) URL",
      "u5: must be an absolute http(s) URL",
      "u6: required",
    ],
  );
});

test("timestamps: within Timestamp's range, nanos 0–999,999,999, after 1970 and within the bound", (t) => {
  const now = Date.UTC(2026, 0, 1);
  const year = limits.maxLifetimeSec * 1000;
  const at = (seconds: bigint, nanos = 0) => {
    const v = new Violations();
    const ms = v.instant("expires_at", create(TimestampSchema, { seconds, nanos }), now, year);
    return { ms, why: v.list.map((x) => x.description) };
  };
  const inAnHour = BigInt(now / 1000 + 3600);
  t.deepEqual(at(inAnHour, 1), { ms: now + 3_600_001, why: [] }, "nanos round up to the ms");
  t.deepEqual(at(inAnHour, 999_999_999).ms, now + 3_601_000);
  t.deepEqual(at(inAnHour, -1).why, ["nanos must be 0 to 999,999,999"]);
  t.deepEqual(at(inAnHour, 1_000_000_000).why, ["nanos must be 0 to 999,999,999"]);
  t.deepEqual(at(253_402_300_800n).why, [
    "seconds out of google.protobuf.Timestamp's range (years 1 to 9999)",
  ]);
  t.deepEqual(at(-62_135_596_801n).why, [
    "seconds out of google.protobuf.Timestamp's range (years 1 to 9999)",
  ]);
  t.deepEqual(at(9_223_372_036_854_775_807n).why, [
    "seconds out of google.protobuf.Timestamp's range (years 1 to 9999)",
  ]);
  for (const s of [0n, -1n, BigInt((now + year) / 1000) + 1n]) {
    t.deepEqual(at(s).why, ["must be a time after 1970 and within a year from now"], String(s));
  }
  t.true(Number.isNaN(at(0n).ms));
});
