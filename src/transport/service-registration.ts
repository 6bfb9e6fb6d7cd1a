// What a listener serves and where it listens: the same registrations go to
// the gRPC listener and to the HTTP listener.

import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";

/** One service and its implementation, as Connect's `router.service()` takes them. */
export interface ServiceRegistration<S extends DescService = DescService> {
  readonly desc: S;
  readonly impl: Partial<ServiceImpl<S>>;
}

/** Registrations with each impl checked against its own service. */
export type ServiceRegistrations<T extends readonly DescService[]> = {
  readonly [K in keyof T]: ServiceRegistration<T[K]>;
};

export interface ListenAddress {
  readonly host: string;
  /** The bound port: the one the OS chose when asked for port 0. */
  readonly port: number;
}
