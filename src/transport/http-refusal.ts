// A call the HTTP listener refuses before its body is read (authentication),
// answered in the caller's protocol, as connect-node would answer the same
// error: gRPC and gRPC-Web get a trailers-only response (grpc-status,
// grpc-message, grpc-status-details-bin in the headers), a Connect stream an
// end-of-stream message, Connect unary and anything else a JSON error with
// the matching HTTP status.

import type http from "node:http";
import type http2 from "node:http2";
import type { ConnectError } from "@connectrpc/connect";
import {
  codeToHttpStatus,
  endStreamFlag,
  endStreamToJson,
  errorToJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

export function writeRefusal(req: Req, res: Res, err: ConnectError): void {
  const type = String(req.headers["content-type"] ?? "");
  const headers = new Headers();
  let status = 200;
  let body: Uint8Array | undefined;
  if (/^application\/grpc(-web(-text)?)?([+;]|$)/.test(type)) {
    headers.set("content-type", type);
    setTrailerStatus(headers, err);
  } else if (/^application\/connect\+/.test(type)) {
    headers.set("content-type", type);
    const json = new TextEncoder().encode(JSON.stringify(endStreamToJson(new Headers(), err, {})));
    body = new Uint8Array(5 + json.length);
    body[0] = endStreamFlag;
    new DataView(body.buffer).setUint32(1, json.length);
    body.set(json, 5);
  } else {
    status = codeToHttpStatus(err.code);
    headers.set("content-type", "application/json");
    body = errorToJsonBytes(err, {});
  }
  const out: Record<string, string> = {};
  headers.forEach((v, k) => {
    out[k] = v;
  });
  (res as http.ServerResponse).writeHead(status, out);
  (res as http.ServerResponse).end(body);
}
