// Property (fast-check): a sealed token field opens only in its own place. Sealed for
// (key, generation, field), it opens there to exactly what was sealed, and anywhere else (another
// key, even one whose id holds '#', another generation or another field) it is DECRYPT_FAILED.

import test from "ava";
import fc from "fast-check";
import { keyId, sessionKey } from "../core/token.ts";
import {
  generateKey,
  parseKeyring,
  SealingError,
  sealedTokenFields,
  tokenFieldAad,
} from "./sealing.ts";

const ring = parseKeyring(`k1:${generateKey()}`);
const place = fc.record({
  key: fc
    .tuple(fc.string({ unit: "grapheme", maxLength: 24 }), fc.constantFrom("idp", "corp", "a#1"))
    .map(([s, p]) => keyId(sessionKey(s, p))),
  generation: fc.integer({ min: 1, max: 2 ** 31 }),
  field: fc.constantFrom(...sealedTokenFields),
});
const aadOf = (p: { key: string; generation: number; field: (typeof sealedTokenFields)[number] }) =>
  tokenFieldAad(p.key, p.generation, p.field);

test("a sealed value opens in its own place to what was sealed, and nowhere else", (t) => {
  fc.assert(
    fc.property(
      place,
      place,
      fc.constantFrom("key", "generation", "field"),
      fc.string({ unit: "binary", maxLength: 200 }),
      (home, donor, moved, value) => {
        // Elsewhere by one part only: the closest a moved or replayed value can come.
        const other = { ...home, [moved]: donor[moved] };
        const sealed = ring.seal(value, aadOf(home));
        if (ring.open(sealed, aadOf(home)) !== value) return false;
        if (aadOf(other) === aadOf(home)) return true;
        try {
          ring.open(sealed, aadOf(other));
          return false;
        } catch (err) {
          return err instanceof SealingError && err.code === "DECRYPT_FAILED";
        }
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

test("two places never share associated data unless they are the same place", (t) => {
  fc.assert(
    fc.property(place, place, (a, b) => {
      const same = a.key === b.key && a.generation === b.generation && a.field === b.field;
      return (aadOf(a) === aadOf(b)) === same;
    }),
    { numRuns: 2_000 },
  );
  t.pass();
});
