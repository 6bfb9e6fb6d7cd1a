// Retry-After as providers send it: seconds or an HTTP-date, and nothing else.

import test from "ava";
import { parseRetryAfterMs } from "./retry-after.ts";

test("parseRetryAfterMs", (t) => {
  const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
  t.is(parseRetryAfterMs("0", now), 0);
  t.is(parseRetryAfterMs("120", now), 120_000);
  t.is(parseRetryAfterMs(" 5 ", now), 5_000);
  t.is(parseRetryAfterMs("Wed, 21 Oct 2015 07:29:00 GMT", now), 60_000);
  t.is(parseRetryAfterMs("Wednesday, 21-Oct-15 07:29:00 GMT", now), 60_000);
  t.is(parseRetryAfterMs("Wed Oct 21 07:29:00 2015", now) !== undefined, true);
  t.is(parseRetryAfterMs("Wed, 21 Oct 2015 07:27:00 GMT", now), 0, "a past date means now");
  t.is(parseRetryAfterMs(null, now), undefined);
  t.is(parseRetryAfterMs(undefined, now), undefined);
  t.is(parseRetryAfterMs("", now), undefined);
  t.is(parseRetryAfterMs("-1", now), undefined);
  t.is(parseRetryAfterMs("1.5", now), undefined);
  t.is(parseRetryAfterMs("soon", now), undefined);
  t.is(parseRetryAfterMs("Wed, 99 Foo 2015 07:29:00 GMT", now), undefined);
  t.is(parseRetryAfterMs("9".repeat(400), now), undefined);
});
