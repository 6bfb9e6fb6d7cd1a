// The one TokenService implementation both listeners serve: the core's handlers and the flows'
// methods, guarded by the policy and audit when either is on, then the per-caller limits; and
// the one mapping of errors to the wire.

import { TokenService } from "../gen/tokenvend/v1/token_service_pb.js";
import type { Config } from "./config.ts";
import { type Clock, systemClock } from "./core/clock.ts";
import type { Flows } from "./core/flows.ts";
import type { Logger } from "./core/logger.ts";
import type { TokenVendor } from "./core/token-vendor.ts";
import type { CallerLimiting } from "./limits.ts";
import { guardTokenService } from "./rpc/access-control.ts";
import { toConnectError } from "./rpc/error-mapping.ts";
import { createFlowService } from "./rpc/flow-service.ts";
import { createTokenService } from "./rpc/token-service.ts";
import type { Security } from "./security.ts";
import { createWireErrors } from "./transport/index.ts";

export function tokenServiceOf(o: {
  readonly vendor: TokenVendor;
  readonly flows: Flows;
  readonly security: Security;
  readonly config: Config;
  readonly limiting: CallerLimiting;
  readonly log: Logger;
  readonly clock?: Clock;
}) {
  // Authentication off and no audit: the handlers as they are, nothing on the hot path.
  const guarded = o.security.policy !== undefined || o.security.audit !== undefined;
  // One implementation of TokenService, the flows' methods included, for both listeners.
  const service = {
    ...createTokenService({
      vendor: o.vendor,
      exchanges: o.flows.exchanges,
      guarded,
      ...(o.clock !== undefined ? { clock: o.clock } : {}),
    }),
    ...createFlowService(o.flows, { guarded }),
  };
  const impl = o.limiting.service(
    guarded
      ? guardTokenService(service, {
          policy: o.security.policy,
          sessionJwts: o.security.sessionJwts,
          audit: o.security.audit,
          now: () => (o.clock ?? systemClock).now(),
        })
      : service,
  );
  // The one mapping of errors to the wire, for both listeners.
  const errors = createWireErrors({
    toConnectError,
    onInternalError: (err, method) =>
      o.log.error(
        { method, err: err instanceof Error ? err.message : String(err) },
        "internal error",
      ),
  });
  const services = [{ desc: TokenService, impl }];
  return { services, errors };
}
