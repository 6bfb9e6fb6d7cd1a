// The target of ExchangeToken and of WatchToken's `exchange`, validated into the core's form.

import type { ExchangeTarget } from "../../gen/tokenvend/v1/token_service_pb.js";
import type { ExchangeTargetInput } from "../core/token-exchange.ts";
import type { Access } from "./access.ts";
import { limits, type Violations } from "./validate.ts";

/** The validated exchange target; problems go to `v` with fields under `prefix`. */
export function exchangeTarget(
  t: ExchangeTarget | undefined,
  v: Violations,
  prefix: string,
): ExchangeTargetInput {
  const s = t?.subject;
  let subject: ExchangeTargetInput["subject"];
  if (s?.case === "session") {
    v.sessionId(`${prefix}session.session_id`, s.value.sessionId)
      .name(`${prefix}session.provider`, s.value.provider)
      .text(`${prefix}session.expected_subject`, s.value.expectedSubject, limits.bindingMaxChars)
      .text(
        `${prefix}session.expected_client_id`,
        s.value.expectedClientId,
        limits.bindingMaxChars,
      );
    subject = {
      kind: "session",
      sessionId: s.value.sessionId,
      provider: s.value.provider,
      expectedSubject: s.value.expectedSubject,
      expectedClientId: s.value.expectedClientId,
    };
  } else if (s?.case === "grant") {
    v.name(`${prefix}grant`, s.value);
    subject = { kind: "grant", grant: s.value };
  } else {
    v.add(`${prefix}subject`, "set session or grant");
    subject = { kind: "grant", grant: "" };
  }
  v.token(`${prefix}audience`, t?.audience ?? "", true)
    .scopes(`${prefix}scopes`, t?.scopes ?? [])
    .token(`${prefix}requested_token_type`, t?.requestedTokenType ?? "", false, limits.urlMaxChars);
  return {
    subject,
    audience: t?.audience ?? "",
    scopes: t?.scopes ?? [],
    requestedTokenType: t?.requestedTokenType || undefined,
  };
}

/** The target as the access control decided: a session subject is read as `access.owner`'s. */
export function ownedExchange(t: ExchangeTargetInput, access: Access): ExchangeTargetInput {
  if (t.subject.kind !== "session" || access.owner === undefined) return t;
  return { ...t, subject: { ...t.subject, owner: access.owner } };
}
