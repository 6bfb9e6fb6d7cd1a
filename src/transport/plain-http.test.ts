// The plain HTTP listener binds like the RPC listeners (IPv4, bracketed IPv6,
// port 0) and drains like them: a request in flight finishes within the
// grace, an idle keep-alive connection does not hold the close.

import http from "node:http";
import test from "ava";
import { createPlainHttpListener } from "./plain-http.ts";

function get(port: number, host = "127.0.0.1", agent?: http.Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host, port, path: "/", ...(agent !== undefined ? { agent } : {}) }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => {
          body += c.toString();
        });
        res.on("end", () => resolve(body));
      })
      .on("error", reject);
  });
}

test("binds 127.0.0.1:0 and [::1]:0 to free ports and serves both", async (t) => {
  for (const [hostPort, host] of [
    ["127.0.0.1:0", "127.0.0.1"],
    ["[::1]:0", "::1"],
  ] as const) {
    const l = createPlainHttpListener((_req, res) => res.end("ok"));
    const addr = await l.listen(hostPort);
    t.is(addr.host, host);
    t.true(addr.port > 0);
    t.is(await get(addr.port, host), "ok");
    await l.close(1_000);
  }
});

test("close lets a request in flight finish and does not wait on an idle keep-alive connection", async (t) => {
  let release: (() => void) | undefined;
  const l = createPlainHttpListener((req, res) => {
    if (req.url === "/") {
      release = () => res.end("late");
      return;
    }
    res.end();
  });
  const { port } = await l.listen("127.0.0.1:0");
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const inFlight = get(port, "127.0.0.1", agent);
  while (release === undefined) await new Promise((r) => setImmediate(r));
  const started = performance.now();
  const closed = l.close(5_000);
  release();
  t.is(await inFlight, "late");
  await closed;
  t.true(performance.now() - started < 2_000, "closed without waiting out the grace");
  await t.throwsAsync(get(port));
});
