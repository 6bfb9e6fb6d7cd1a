// A loopback HTTP proxy in front of the real identity provider that can hold
// requests for a while, so tests can have a refresh in flight on purpose.

import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";

export interface DelayProxy {
  /** Base URL of the proxy; paths are forwarded unchanged. */
  readonly url: string;
  /** Milliseconds each request is held before it is forwarded. */
  delayMs: number;
  /** Requests seen, by path. */
  readonly counts: Map<string, number>;
  close(): Promise<void>;
}

export async function startDelayProxy(target: string): Promise<DelayProxy> {
  const to = new URL(target);
  const counts = new Map<string, number>();
  const proxy: { delayMs: number } = { delayMs: 0 };
  const server = createServer((req, res) => {
    const path = req.url ?? "/";
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      setTimeout(() => {
        // A client that died while its request was held (a killed replica) never reaches upstream.
        if (req.socket.destroyed) return;
        const up = request(
          {
            host: to.hostname,
            port: to.port,
            method: req.method,
            path,
            headers: { ...req.headers, host: to.host },
          },
          (upRes) => {
            res.writeHead(upRes.statusCode ?? 502, upRes.headers);
            upRes.pipe(res);
          },
        );
        up.on("error", () => {
          res.writeHead(502).end();
        });
        up.end(Buffer.concat(chunks));
      }, proxy.delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get delayMs() {
      return proxy.delayMs;
    },
    set delayMs(v: number) {
      proxy.delayMs = v;
    },
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
