// What the store adapters throw when the backend fails them. The core treats any store failure
// as STORE_UNAVAILABLE; the code here says why, for logs and for an operator. A caller's own
// abort is never wrapped: the adapters rethrow `signal.reason` as is. Sealing failures (wrong
// key, moved ciphertext) are SealingErrors from ./sealing.ts.

export const storeErrorCodes = [
  /** The backend did not answer (network, server selection, timeout, closed store). Transient. */
  "UNAVAILABLE",
  /** The backend answered with an error other than the expected duplicate key. */
  "FAILED",
  /** A stored document or state file does not have the expected shape. */
  "CORRUPT",
  /** A bounded retry loop gave up (a claim holder kept vanishing between insert and read). */
  "CONTENDED",
  /** The file store's directory is in use by another live process. */
  "LOCKED",
  /** The file store could not read or write its files. */
  "IO",
] as const;

export type StoreErrorCode = (typeof storeErrorCodes)[number];

export class StoreError extends Error {
  override readonly name = "StoreError";
  readonly code: StoreErrorCode;

  constructor(code: StoreErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.code = code;
  }
}
