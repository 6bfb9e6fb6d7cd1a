// The HTTP listener answers only the hosts it serves (a DNS-rebinding page
// reaching a loopback instance through its own name gets 421) and serves a
// browser's cross-origin request only for origins CORS allows, preflight
// included.

import http from "node:http";
import test from "ava";
import { startStack } from "./support/stack.ts";

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function post(port: number, headers: Record<string, string>, method = "POST"): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method,
        path: "/tokenvend.v1.TokenService/GetToken",
        headers: { "content-type": "application/json", ...headers },
      },
      (res) => {
        let body = "";
        res.on("data", (b: Buffer) => {
          body += b.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.once("error", reject);
    req.end(method === "POST" ? '{"grant":"demo"}' : undefined);
  });
}

test("only configured hosts are served; a cross-site browser request only from a CORS origin", async (t) => {
  const s = await startStack({
    config: {
      http: {
        listen: "127.0.0.1:0",
        allowedHosts: ["localhost", "127.0.0.1", "tokenvend.internal"],
        corsOrigins: ["https://app.example"],
      },
    },
  });
  t.teardown(s.stop);
  const port = s.server.httpPort;
  t.is((await post(port, { host: `127.0.0.1:${port}` })).status, 200);
  t.is((await post(port, { host: "tokenvend.internal" })).status, 200);
  const rebound = await post(port, { host: `attacker.example:${port}` });
  t.is(rebound.status, 421);
  const crossSite = await post(port, { host: `localhost:${port}`, origin: "https://evil.example" });
  t.is(crossSite.status, 403);
  const allowed = await post(port, { host: `localhost:${port}`, origin: "https://app.example" });
  t.is(allowed.status, 200);
  t.is(allowed.headers["access-control-allow-origin"], "https://app.example");
  const preflight = await post(
    port,
    {
      host: `localhost:${port}`,
      origin: "https://app.example",
      "access-control-request-method": "POST",
    },
    "OPTIONS",
  );
  t.is(preflight.status, 204);
  const allowHeaders = String(preflight.headers["access-control-allow-headers"]).split(", ");
  t.true(allowHeaders.includes("Authorization"), allowHeaders.join(", "));
  t.true(allowHeaders.includes("tokenvend-session-jwt"), "a browser may send a session JWT");
  t.is(preflight.headers["access-control-allow-origin"], "https://app.example");
});

test("the default answers loopback names only, and no cross-origin request", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const port = s.server.httpPort;
  t.is((await post(port, { host: `localhost:${port}` })).status, 200);
  t.is((await post(port, { host: `[::1]:${port}` })).status, 200);
  t.is((await post(port, { host: `rebind.example:${port}` })).status, 421);
  t.is(
    (await post(port, { host: `localhost:${port}`, origin: "http://localhost:3000" })).status,
    403,
  );
});
