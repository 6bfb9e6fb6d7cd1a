// Waiting on shared work (a refresh, a discovery, index creation): a caller's
// abort ends only that caller's wait, never the work the others share.

/**
 * Resolves or rejects with `p`; rejects early, with `reasonOf(signal)` (default
 * the signal's reason), when `signal` aborts first. Leaves no listener behind.
 */
export function abandonWait<T>(
  p: Promise<T>,
  signal: AbortSignal | undefined,
  reasonOf: (signal: AbortSignal) => unknown = (s) => s.reason,
): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) return Promise.reject(reasonOf(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(reasonOf(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
