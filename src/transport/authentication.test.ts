// headerTimeoutMs(): the time a call was given, as the authenticate hook reads it on the HTTP
// listener (gRPC and gRPC-Web send grpc-timeout, Connect sends connect-timeout-ms).

import test from "ava";
import { headerTimeoutMs } from "./authentication.ts";

const of = (headers: Record<string, string>) => headerTimeoutMs((name) => headers[name]);

test("grpc-timeout in each of its units, connect-timeout-ms, and what does not parse", (t) => {
  t.is(of({ "grpc-timeout": "2H" }), 7_200_000);
  t.is(of({ "grpc-timeout": "2M" }), 120_000);
  t.is(of({ "grpc-timeout": "5S" }), 5_000);
  t.is(of({ "grpc-timeout": "250m" }), 250);
  t.is(of({ "grpc-timeout": "1500u" }), 1.5);
  t.is(of({ "grpc-timeout": "2000000n" }), 2);
  t.is(of({ "connect-timeout-ms": "750" }), 750);
  t.is(of({}), undefined);
  for (const bad of ["", "5", "5s", "-5S", "123456789S", "5 S", "S"]) {
    t.is(of({ "grpc-timeout": bad }), undefined, bad);
  }
  for (const bad of ["", "1.5", "-1", "12345678901", "ten"]) {
    t.is(of({ "connect-timeout-ms": bad }), undefined, bad);
  }
});
