import test from "ava";
import { formatHostPort, parseHostPort } from "./host-port.ts";

test("parseHostPort: IPv4 addresses, names and bracketed IPv6, port 0 to 65535", (t) => {
  t.deepEqual(parseHostPort("127.0.0.1:50051"), { host: "127.0.0.1", port: 50051 });
  t.deepEqual(parseHostPort("0.0.0.0:0"), { host: "0.0.0.0", port: 0 });
  t.deepEqual(parseHostPort("localhost:8080"), { host: "localhost", port: 8080 });
  t.deepEqual(parseHostPort("tokenvend.ns.svc-1:65535"), {
    host: "tokenvend.ns.svc-1",
    port: 65535,
  });
  t.deepEqual(parseHostPort("[::1]:0"), { host: "::1", port: 0 });
  t.deepEqual(parseHostPort("[::]:50051"), { host: "::", port: 50051 });
  t.deepEqual(parseHostPort("[fe80::1:AB]:443"), { host: "fe80::1:AB", port: 443 });
});

test("parseHostPort: anything else is a RangeError naming what and the value", (t) => {
  for (const bad of [
    "",
    "localhost",
    ":8080",
    "localhost:",
    "localhost:65536",
    "localhost:123456",
    "localhost:-1",
    "localhost:80.5",
    "localhost:80x",
    "::1:80",
    "[::1]",
    "[::1]80",
    "[zz::1]:80",
    "[127.0.0.1]:80",
    "exa mple:80",
    "host_name:80",
    " 127.0.0.1:80",
    "http://127.0.0.1:80",
  ]) {
    const err = t.throws(() => parseHostPort(bad, "grpc.listen"), { instanceOf: RangeError }, bad);
    t.is(
      err?.message,
      `grpc.listen must be host:port, such as 127.0.0.1:50051 or [::1]:50051; got "${bad}"`,
    );
  }
  t.regex(
    t.throws(() => parseHostPort("nope"))?.message ?? "",
    /^the listen address must be host:port/,
  );
});

test("formatHostPort: brackets IPv6 again, so the result parses back", (t) => {
  for (const v of ["127.0.0.1:1", "localhost:0", "[::1]:50051", "[fe80::1]:2"]) {
    t.is(formatHostPort(parseHostPort(v)), v);
  }
});
