// What one client may hold on a listener: streams and memory per connection, how long a
// connection may stay quiet, old or unanswered, and how long a request may take to arrive.
// grpc-js applies the gRPC listener's through its documented channel options; the HTTP
// listener applies its own (http-server.ts). Without them both run with their libraries'
// defaults, which bound none of this.

import type * as grpc from "@grpc/grpc-js";

export interface GrpcConnectionLimits {
  /** Streams open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly maxConcurrentStreams: number;
  /** The server pings each connection this often... */
  readonly keepaliveTimeMs: number;
  /** ...and closes it when a ping is not answered within this (a dead client's streams end). */
  readonly keepaliveTimeoutMs: number;
  /** A connection without calls this long gets GOAWAY; 0 is off. */
  readonly maxConnectionIdleMs: number;
  /** A connection gets GOAWAY this long (±10 %) after it opened; 0 is off. */
  readonly maxConnectionAgeMs: number;
  /** ...and is closed, calls and all, this long after that GOAWAY. */
  readonly maxConnectionAgeGraceMs: number;
  /** Node's HTTP/2 session memory per connection, in megabytes; over it new streams are refused. */
  readonly maxSessionMemoryMB: number;
}

export interface HttpConnectionLimits {
  /** HTTP/1.1: the request line and headers must arrive within this of the request's start. */
  readonly headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this (HTTP/1.1 and HTTP/2). */
  readonly requestTimeoutMs: number;
  /** HTTP/1.1: a keep-alive connection idle this long between requests is closed. */
  readonly keepAliveTimeoutMs: number;
  /** Connections open at once; the listener closes more as they arrive. */
  readonly maxConnections: number;
  /** HTTP/2: streams open at once on one connection. */
  readonly maxConcurrentStreams: number;
  /** HTTP/2: Node's session memory per connection, in megabytes. */
  readonly maxSessionMemoryMB: number;
  /** HTTP/2: a connection without streams this long gets GOAWAY. */
  readonly idleTimeoutMs: number;
}

/** grpc-js's value for "never" (its own constant). */
const never = ~(1 << 31);

/** The grpc-js server options that apply `limits`. */
export function grpcLimitOptions(limits: GrpcConnectionLimits): grpc.ServerOptions {
  return {
    "grpc.max_concurrent_streams": limits.maxConcurrentStreams,
    "grpc.keepalive_time_ms": limits.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": limits.keepaliveTimeoutMs,
    "grpc.max_connection_idle_ms": limits.maxConnectionIdleMs || never,
    "grpc.max_connection_age_ms": limits.maxConnectionAgeMs || never,
    "grpc.max_connection_age_grace_ms": limits.maxConnectionAgeGraceMs,
    "grpc-node.max_session_memory": limits.maxSessionMemoryMB,
  };
}
