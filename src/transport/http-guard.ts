// What the HTTP listener checks before anything else: the Host (HTTP/1.1) or
// :authority (HTTP/2) must be one the listener serves, so a DNS-rebinding page
// cannot reach a loopback-bound instance through a name it controls; and a
// browser's cross-site request (an Origin header) is served only for origins
// CORS allows, with the preflight answered here.

import type http from "node:http";
import type http2 from "node:http2";
import { cors as connectCors } from "@connectrpc/connect";

export interface HttpGuardOptions {
  /** Host names (no port) callers may address; `*` alone allows any. */
  readonly allowedHosts: readonly string[];
  /** Origins (scheme://host[:port]) whose browser requests are served; none: no CORS. */
  readonly corsOrigins: readonly string[];
  /** Request headers of the service's own a browser may send, beyond Connect's (Authorization). */
  readonly allowHeaders: readonly string[];
  /** How long a browser may cache a preflight. */
  readonly corsMaxAgeSec?: number;
}

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

/** The host name of a Host or :authority value, without port or IPv6 brackets. */
function hostName(authority: string): string {
  const a = authority.trim().toLowerCase();
  if (a.startsWith("[")) return a.slice(1, a.indexOf("]"));
  const colon = a.lastIndexOf(":");
  return colon >= 0 ? a.slice(0, colon) : a;
}

/** Answers requests the guard refuses (or a preflight); returns true when it did. */
export function createHttpGuard(opts: HttpGuardOptions): (req: Req, res: Res) => boolean {
  const anyHost = opts.allowedHosts.includes("*");
  const hosts = new Set(opts.allowedHosts.map((h) => h.toLowerCase()));
  const origins = new Set(opts.corsOrigins);
  const allowHeaders = [...connectCors.allowedHeaders, ...opts.allowHeaders].join(", ");
  const exposeHeaders = connectCors.exposedHeaders.join(", ");
  const refuse = (res: Res, status: number, text: string) => {
    (res as http.ServerResponse).writeHead(status, { "content-type": "text/plain; charset=utf-8" });
    (res as http.ServerResponse).end(`${text}\n`);
    return true;
  };
  return (req, res) => {
    const authority = (req.headers[":authority"] as string | undefined) ?? req.headers.host ?? "";
    if (!anyHost && !hosts.has(hostName(authority))) {
      return refuse(res, 421, "this listener does not serve that host");
    }
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    if (!origins.has(origin))
      return refuse(res, 403, "cross-origin requests from this origin are not allowed");
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader("vary", "Origin");
    res.setHeader("access-control-expose-headers", exposeHeaders);
    if (req.method === "OPTIONS") {
      (res as http.ServerResponse).writeHead(204, {
        "access-control-allow-methods": connectCors.allowedMethods.join(", "),
        "access-control-allow-headers": allowHeaders,
        "access-control-max-age": String(opts.corsMaxAgeSec ?? 7200),
      });
      (res as http.ServerResponse).end();
      return true;
    }
    return false;
  };
}
