// A stored generation that cannot be opened is the port's UnreadableRecordError: a key id the
// keyring lacks, other key material, an altered or malformed document. The core reports it as
// data loss, never as a store that may come back (DESIGN.md, "Errors on the wire").

import { UnreadableRecordError } from "../core/token-store.ts";
import { SealingError } from "./sealing.ts";
import { StoreError } from "./store-error.ts";

/** Runs `open` (a document's decoding); a sealing or shape failure becomes UnreadableRecordError. */
export function openOrUnreadable<T>(open: () => T): T {
  try {
    return open();
  } catch (err) {
    if (err instanceof SealingError || (err instanceof StoreError && err.code === "CORRUPT")) {
      throw new UnreadableRecordError(err.code, `a stored token cannot be opened: ${err.message}`, {
        cause: err,
      });
    }
    throw err;
  }
}
