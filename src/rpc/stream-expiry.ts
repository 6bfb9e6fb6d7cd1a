// A WatchToken stream lives no longer than the credential that opened it: its
// sink ends the stream UNAUTHENTICATED (TOKEN_EXPIRED) when the caller's token,
// API key or certificate expires, by a timer (a quiet stream ends too) and at
// the next message, and says how the stream ended, for the audit.

import type { HandlerContext } from "@connectrpc/connect";
import type { WatchTokenResponse } from "../../gen/tokenvend/v1/token_service_pb.js";
import { unauthenticated } from "../auth/index.ts";
import type { StreamSink } from "../transport/index.ts";

// setTimeout's longest delay; a credential that outlives it is checked per message only.
const maxTimerMs = 2 ** 31 - 1;

export function expiringSink(
  ctx: HandlerContext,
  sink: StreamSink<WatchTokenResponse>,
  expiresAt: number | undefined,
  now: () => number,
  ended: (err: unknown, generation: number | undefined) => void,
): StreamSink<WatchTokenResponse> {
  let done = false;
  let generation: number | undefined;
  const expired = () => unauthenticated("TOKEN_EXPIRED", "the caller's credential expired");
  const end = (err?: unknown) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    ended(err, generation);
    sink.end(err);
  };
  const delay = expiresAt !== undefined ? Math.max(0, expiresAt - now()) : undefined;
  const timer =
    delay !== undefined && delay <= maxTimerMs
      ? setTimeout(() => end(expired()), delay)
      : undefined;
  timer?.unref();
  ctx.signal.addEventListener("abort", () => end(ctx.signal.reason), { once: true });
  return {
    send(message) {
      if (done) return;
      if (expiresAt !== undefined && now() >= expiresAt) {
        end(expired());
        return;
      }
      generation = generationOfCredential(message.credential);
      sink.send(message);
    },
    end,
  };
}

export function generationOfCredential(c: { generation?: bigint } | undefined): number | undefined {
  return c?.generation !== undefined ? Number(c.generation) : undefined;
}
