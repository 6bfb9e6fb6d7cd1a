// The identity of an mTLS caller, from the client certificate the listener
// verified against the configured CA: its SPIFFE id (a spiffe:// URI SAN, as
// SPIRE, cert-manager's csi-driver-spiffe and Istio issue), or its subject
// when it has none. A certificate with several SPIFFE ids, or one that is not
// a valid SPIFFE id, names no one.

import type { PeerCertificate } from "node:tls";
import { type Caller, unauthenticated } from "./caller.ts";

// Listeners hand the same certificate object for every call of a connection.
const known = new WeakMap<PeerCertificate, Omit<Caller, "peer">>();

export function certificateIdentity(cert: PeerCertificate): Omit<Caller, "peer"> {
  let id = known.get(cert);
  if (id === undefined) {
    id = identityOf(cert);
    known.set(cert, id);
  }
  return id;
}

function identityOf(cert: PeerCertificate): Omit<Caller, "peer"> {
  const uris = subjectAltNames(cert.subjectaltname ?? "")
    .filter((n) => n.type === "URI" && /^spiffe:/i.test(n.value))
    .map((n) => n.value);
  const malformed = uris.find((u) => !spiffeId.test(u));
  if (malformed !== undefined) {
    throw unauthenticated(
      "UNTRUSTED_CERTIFICATE",
      "the client certificate's SPIFFE id is not a valid one (spiffe://trust-domain/path)",
    );
  }
  const expiresAt = Date.parse(cert.valid_to);
  const until = Number.isFinite(expiresAt) ? { expiresAt } : {};
  if (uris.length > 1) {
    throw unauthenticated("UNTRUSTED_CERTIFICATE", "the client certificate has several SPIFFE ids");
  }
  if (uris.length === 1) return { id: uris[0] as string, method: "mtls", ...until };
  const subject = subjectText(cert.subject);
  if (subject === "") {
    throw unauthenticated(
      "UNTRUSTED_CERTIFICATE",
      "the client certificate has no SPIFFE id and no subject",
    );
  }
  return { id: subject, method: "mtls", ...until };
}

/** A SPIFFE id as the SPIFFE standard allows it: lower-case trust domain, plain path segments. */
const spiffeId = /^spiffe:\/\/[a-z0-9._-]{1,255}(\/(?!\.\.?(\/|$))[A-Za-z0-9._-]+)*$/;

/**
 * Node's subjectaltname text as entries: `TYPE:value` or `TYPE:"JSON-escaped value"` (Node
 * quotes a value holding a comma or a quote), separated by ", ". Unreadable text names no one.
 */
export function subjectAltNames(text: string): { type: string; value: string }[] {
  const entry = /([A-Za-z][A-Za-z ]*):(?:"((?:[^"\\]|\\.)*)"|([^,"]*))(?:, |$)/y;
  const out: { type: string; value: string }[] = [];
  for (let at = 0; at < text.length; at = entry.lastIndex) {
    entry.lastIndex = at;
    const m = entry.exec(text);
    if (m === null) {
      throw unauthenticated(
        "UNTRUSTED_CERTIFICATE",
        "the client certificate's names cannot be read",
      );
    }
    const [, type = "", quoted, plain = ""] = m;
    out.push({ type, value: quoted !== undefined ? (JSON.parse(`"${quoted}"`) as string) : plain });
  }
  return out;
}

/** "CN=billing,O=example": the subject's attributes in the certificate's order. */
function subjectText(subject: PeerCertificate["subject"] | undefined): string {
  if (subject === undefined || subject === null) return "";
  return Object.entries(subject)
    .flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => `${k}=${x}`) : [`${k}=${v}`]))
    .join(",");
}
