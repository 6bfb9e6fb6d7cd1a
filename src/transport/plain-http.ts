// Binding a Node server to "host:port", and a plain HTTP/1.1 listener for what
// is not an RPC (the Prometheus scrape endpoint), drained like the RPC ones.

import http from "node:http";
import type net from "node:net";
import { createListenerDrain } from "./drain.ts";
import { parseHostPort } from "./host-port.ts";
import type { ListenAddress } from "./service-registration.ts";

/** Binds `server` to "host:port" ("[::1]:0" for IPv6); port 0 picks a free port. */
export function listenOn(server: net.Server, hostPort: string): Promise<ListenAddress> {
  return new Promise((resolve, reject) => {
    const { host, port } = parseHostPort(hostPort);
    server.once("error", reject);
    server.listen({ host, port }, () => {
      server.off("error", reject);
      resolve({ host, port: (server.address() as net.AddressInfo).port });
    });
  });
}

export interface PlainHttpListener {
  listen(hostPort: string): Promise<ListenAddress>;
  /** Stops accepting, lets requests in flight finish for up to graceMs, then closes every connection. */
  close(graceMs: number): Promise<void>;
}

export function createPlainHttpListener(handler: http.RequestListener): PlainHttpListener {
  let draining = false;
  const server = http.createServer((req, res) => {
    // A keep-alive connection that goes idle during the drain is closed then,
    // not after Node's keep-alive timeout.
    res.once("close", () => {
      if (draining) setImmediate(() => server.closeIdleConnections());
    });
    handler(req, res);
  });
  const drain = createListenerDrain({
    stopAccepting: () =>
      new Promise<void>((resolve) => {
        draining = true;
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
    forceClose: () => server.closeAllConnections(),
  });
  return {
    listen: (hostPort) => listenOn(server, hostPort),
    close: (graceMs) => drain.drain(graceMs),
  };
}
