// The service's other outbound HTTP call: a failure webhook to the application (see
// core/renewal-failures.ts), signed the Standard Webhooks way with its maintained library
// (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
// "id.timestamp.body">`), so receivers verify it with the same library in any language. One
// request per call; the core retries.

import { Webhook } from "standardwebhooks";
import type { WebhookDeliver } from "../core/renewal-failures.ts";
import type { FetchLike } from "./provider-state.ts";

export function createWebhookSender(fetchImpl: FetchLike = fetch): WebhookDeliver {
  const signers = new Map<string, Webhook>();
  return async (hook, msg, signal) => {
    let signer = signers.get(hook.secret);
    if (signer === undefined) {
      signer = new Webhook(hook.secret);
      signers.set(hook.secret, signer);
    }
    const timestamp = new Date(msg.timestampMs);
    const res = await fetchImpl(hook.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "webhook-id": msg.id,
        "webhook-timestamp": String(Math.floor(msg.timestampMs / 1000)),
        "webhook-signature": signer.sign(msg.id, timestamp, msg.body),
      },
      body: msg.body,
      signal,
      redirect: "manual",
    });
    await res.body?.cancel().catch(() => {});
    return res.status;
  };
}
