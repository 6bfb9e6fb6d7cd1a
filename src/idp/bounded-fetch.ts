// A provider's answer is read whole before oauth4webapi parses it, so its size is capped here:
// a provider (or whatever answers at its address) that sends a huge or endless body fails that
// one request, instead of growing this replica's memory. A declared Content-Length over the cap
// is refused before a byte is read; otherwise the body is read up to the cap and the connection
// dropped past it. The body is never kept in the error, and the response handed on is a plain
// buffered Response with the original status and headers.

import type { FetchLike } from "./provider-state.ts";

/** The provider's response was larger than allowed; says the size only, never the content. */
export class ResponseTooLargeError extends Error {
  override readonly name = "ResponseTooLargeError";
  readonly code = "RESPONSE_TOO_LARGE";
  readonly status: number;

  constructor(status: number, maxBytes: number) {
    super(`HTTP ${status}: the response is larger than ${maxBytes} bytes`);
    this.status = status;
  }
}

/** Statuses whose Response may not carry a body. */
const nullBodyStatuses = new Set([101, 103, 204, 205, 304]);

export function boundedFetch(fetchImpl: FetchLike, maxBytes: number): FetchLike {
  if (!Number.isInteger(maxBytes) || maxBytes < 1) {
    throw new RangeError(`maxBytes must be a positive integer; got ${maxBytes}`);
  }
  return async (url, init) => {
    const response = await fetchImpl(url, init);
    const declared = Number(response.headers.get("content-length") ?? Number.NaN);
    if (declared > maxBytes) {
      await response.body?.cancel().catch(() => {});
      throw new ResponseTooLargeError(response.status, maxBytes);
    }
    const body = await readAtMost(response, maxBytes);
    return new Response(nullBodyStatuses.has(response.status) ? null : body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
}

async function readAtMost(response: Response, maxBytes: number): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (response.body !== null) {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw new ResponseTooLargeError(response.status, maxBytes);
      }
      chunks.push(value);
    }
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
