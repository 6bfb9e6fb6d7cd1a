// Node's subjectaltname text read entry by entry, quoted values included (the shapes Node 24
// prints for certificates made by openssl: test/tls.test.ts makes such certificates).

import test from "ava";
import { AuthError } from "./caller.ts";
import { subjectAltNames } from "./peer-identity.ts";

test("entries, with quoted values unescaped; a quoted comma does not split an entry", (t) => {
  t.deepEqual(
    subjectAltNames(
      'DNS:"x\\u002c URI:spiffe://td/admin", URI:spiffe://td/ns/a, IP Address:127.0.0.1, URI:"spiffe://td/a\\u002cb"',
    ),
    [
      { type: "DNS", value: "x, URI:spiffe://td/admin" },
      { type: "URI", value: "spiffe://td/ns/a" },
      { type: "IP Address", value: "127.0.0.1" },
      { type: "URI", value: "spiffe://td/a,b" },
    ],
  );
  t.deepEqual(subjectAltNames(""), []);
});

test("text that is not a list of names is refused, not guessed at", (t) => {
  for (const bad of ['URI:"spiffe://td/a', "no colon here", 'DNS:a"b']) {
    const err = t.throws(() => subjectAltNames(bad), undefined, bad);
    t.true(err instanceof AuthError && err.reason === "UNTRUSTED_CERTIFICATE", bad);
  }
});
