// What the access control decided for one call, handed to the handlers as a
// context value: the owner a stored session gets, and the owner (if any) a
// session must have for this caller to touch it.

import { createContextKey, type HandlerContext } from "@connectrpc/connect";

export interface Access {
  /** Recorded as the owner of sessions this call stores. */
  readonly recordOwner: string | undefined;
  /** Sessions of any other owner are PERMISSION_DENIED (NOT_OWNER); undefined: any owner. */
  readonly owner: string | undefined;
  /** The client id a session JWT bound this call to (GetAllUpstreamCredentials). */
  readonly expectedClientId?: string | undefined;
  /** The providers the call may reach (GetAllUpstreamCredentials); undefined: every one. */
  readonly providers?: ((provider: string) => boolean) | undefined;
}

/** Authentication off: nothing recorded, nothing checked. */
export const openAccess: Access = { recordOwner: undefined, owner: undefined };

export const accessKey = createContextKey<Access>(openAccess, {
  description: "what the policy decided for this call",
});

/** The call's access decision; `guarded` false: open access, the context untouched. */
export function accessOf(ctx: HandlerContext, guarded: boolean): Access {
  return guarded ? ctx.values.get(accessKey) : openAccess;
}
