// File-system failures of the file store, as StoreError IO naming what failed and the system
// error code (never file contents). Store and sealing errors pass as they are.

import { SealingError } from "./sealing.ts";
import { StoreError } from "./store-error.ts";

export async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof StoreError || err instanceof SealingError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new StoreError("IO", `file store: ${what} failed${code ? ` (${code})` : ""}`, {
      cause: err,
    });
  }
}
