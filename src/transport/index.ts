// The transport wing: Connect service implementations served on two listeners,
// importing nothing from the rest of tokenvend (only libraries and the
// google.rpc messages in gen/).
//
// Why two listeners, and why this much code: measured on Node 24 on these
// 2-core machines with one grpc-js client, server CPU per unary call is about
// 36 µs for a @grpc/grpc-js server and 200 µs for connect-node's adapter. So
// gRPC, the hot path of every generated stub, grpcurl, ghz and the Kubernetes
// probes, is served by grpc-js, with an adapter that runs Connect handlers,
// interceptors and errors the way Connect does (grpc-server.ts and the
// grpc-*.ts files). connect-node serves what grpc-js cannot: Connect, gRPC-Web
// and gRPC over HTTP/1.1 and h2c on one port, for browsers and curl
// (http-server.ts). Handlers are written once and mounted on both: unary ones
// as Connect writes them, server streams in push form (push-stream.ts), which
// connect-node gets as an async generator (push-iterable.ts). What an error
// becomes on the wire is decided by one function both listeners share
// (wire-errors.ts), and both drain the same way (drain.ts). Both run the
// application's authenticate hook before a request body is read
// (authentication.ts), serve TLS from files they reload (tls-files.ts), and the
// HTTP listener checks Host and Origin first (http-guard.ts).
//
// Library internals are read in library-internals.ts and nowhere else.

export type { Authenticate, AuthenticationRequest } from "./authentication.ts";
export { authenticatedKey } from "./authentication.ts";
export type { GrpcConnectionLimits, HttpConnectionLimits } from "./connection-limits.ts";
export { freeze } from "./frozen-message.ts";
export type { GrpcServer, GrpcServerOptions } from "./grpc-server.ts";
export { createGrpcServer } from "./grpc-server.ts";
export type { HealthListener } from "./health-listener.ts";
export { createHealthListener } from "./health-listener.ts";
export type { HostPort } from "./host-port.ts";
export { formatHostPort, parseHostPort } from "./host-port.ts";
export type { HttpGuardOptions } from "./http-guard.ts";
export type { HttpServer, HttpServerOptions } from "./http-server.ts";
export { createHttpServer } from "./http-server.ts";
export type { PlainHttpListener } from "./plain-http.ts";
export { createPlainHttpListener } from "./plain-http.ts";
export type {
  PushStreamImpl,
  PushStreamObservation,
  PushStreamObserver,
  StreamSink,
} from "./push-stream.ts";
export { pushStream, pushStreamOf } from "./push-stream.ts";
export type {
  ListenAddress,
  ServiceRegistration,
  ServiceRegistrations,
} from "./service-registration.ts";
export type { GrpcStatusDetails } from "./status-details.ts";
export { decodeGrpcStatusDetails, grpcStatusDetailsKey } from "./status-details.ts";
export type { TlsFiles, TlsFilesOptions } from "./tls-files.ts";
export { watchTlsFiles } from "./tls-files.ts";
export type { InternalErrorHandler, WireErrorOptions, WireErrors } from "./wire-errors.ts";
export { createWireErrors } from "./wire-errors.ts";
