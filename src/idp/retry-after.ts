// Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. A pure
// function of the header and the clock, so every form has an exact test.

const delaySeconds = /^\d+$/;
// IMF-fixdate and the two obsolete forms all start with a day name.
const httpDate = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? /;

/**
 * Milliseconds to wait from `nowMs`, or undefined when the header is absent or
 * malformed. A date in the past means "now" (0).
 */
export function parseRetryAfterMs(
  value: string | null | undefined,
  nowMs: number,
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (delaySeconds.test(v)) {
    const ms = Number(v) * 1000;
    return Number.isFinite(ms) ? ms : undefined;
  }
  if (httpDate.test(v)) {
    const at = Date.parse(v);
    if (Number.isNaN(at)) return undefined;
    return Math.max(0, at - nowMs);
  }
  return undefined;
}
