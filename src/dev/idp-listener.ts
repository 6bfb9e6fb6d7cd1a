// The local IdP's HTTP listener: it listens before the provider exists (the issuer URL needs
// the port), answering 503 until serve() hands it a handler, and can be stopped and started
// again on the same port, its open connections closed on stop, to play an outage.

import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

export interface IdpListener {
  /** The actual port (kept across stop() and start()). */
  readonly port: number;
  readonly running: boolean;
  serve(handler: (req: IncomingMessage, res: ServerResponse) => void): void;
  /** Closes the listener and every open connection. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
}

/** Listens on `host:port` (0: any free port). */
export async function startIdpListener(host: string, requestedPort: number): Promise<IdpListener> {
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const server = createServer((req, res) => {
    if (handler !== undefined) handler(req, res);
    else res.writeHead(503).end();
  });
  let port = await listen(server, requestedPort, host);
  let running = true;
  return {
    get port() {
      return port;
    },
    get running() {
      return running;
    },
    serve(h) {
      handler = h;
    },
    async stop() {
      if (!running) return;
      running = false;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
    async start() {
      if (running) return;
      port = await listen(server, port, host);
      running = true;
    },
  };
}

function listen(
  server: ReturnType<typeof createServer>,
  port: number,
  host: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
