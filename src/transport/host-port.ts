// "host:port", as every listener and the config take a listen address: a name
// or IPv4 address, or an IPv6 address in brackets ("[::1]:0"); port 0 to
// 65535, where 0 asks the OS for a free port. The one parser for all of them.

export interface HostPort {
  /** Without the brackets of an IPv6 address. */
  readonly host: string;
  readonly port: number;
}

const hostPortRe = /^(?:\[([0-9A-Fa-f:]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/;

/** Parses "host:port"; throws a RangeError that names `what` and the value. */
export function parseHostPort(value: string, what = "the listen address"): HostPort {
  const m = hostPortRe.exec(value);
  const port = Number(m?.[3]);
  if (m === null || port > 65535) {
    throw new RangeError(
      `${what} must be host:port, such as 127.0.0.1:50051 or [::1]:50051; got "${value}"`,
    );
  }
  return { host: m[1] ?? m[2] ?? "", port };
}

/** "host:port" again, IPv6 addresses in brackets: what a client dials. */
export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
