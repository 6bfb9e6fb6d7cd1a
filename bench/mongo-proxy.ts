// A loopback TCP proxy in front of a MongoDB-protocol server that counts the commands clients
// send, by name, from the wire itself: every OP_MSG (opcode 2013) from a client is one command,
// named by the first key of its body section. What the replicas' drivers send, heartbeats and
// all, whatever process they run in.

import { createConnection, createServer, type Server, type Socket } from "node:net";

export interface CountingProxy {
  /** `mongodb://127.0.0.1:PORT/` */
  readonly uri: string;
  /** Commands seen so far, by name. */
  counts(): Map<string, number>;
  total(): number;
  close(): Promise<void>;
}

const OP_MSG = 2013;

export async function startCountingProxy(target: string): Promise<CountingProxy> {
  const to = new URL(target);
  const counts = new Map<string, number>();
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = createConnection(Number(to.port), to.hostname);
    sockets.add(client).add(upstream);
    let pending: Buffer = Buffer.alloc(0);
    client.on("data", (chunk: Buffer) => {
      upstream.write(chunk);
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      // Whole messages only: a 16-byte header, then the body.
      while (pending.length >= 16) {
        const length = pending.readInt32LE(0);
        if (pending.length < length) break;
        if (pending.readInt32LE(12) === OP_MSG) {
          const name = commandName(pending.subarray(0, length));
          counts.set(name, (counts.get(name) ?? 0) + 1);
        }
        pending = pending.subarray(length);
      }
    });
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    uri: `mongodb://127.0.0.1:${port}/`,
    counts: () => new Map(counts),
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** OP_MSG: header (16), flagBits (4), then sections; kind 0 is the body document. */
function commandName(msg: Buffer): string {
  let at = 20;
  while (at < msg.length) {
    const kind = msg.readUInt8(at);
    if (kind === 0) {
      // BSON document: int32 size, then the first element: type byte, cstring name.
      const nameAt = at + 1 + 4 + 1;
      const end = msg.indexOf(0, nameAt);
      return msg.toString("utf8", nameAt, end);
    }
    // Kind 1 (a document sequence): int32 size covers the rest of the section.
    at += 1 + msg.readInt32LE(at + 1);
  }
  return "?";
}
