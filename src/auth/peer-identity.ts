// The identity of an mTLS caller, from the client certificate the listener
// verified against the configured CA: its SPIFFE id (a spiffe:// URI SAN, as
// SPIRE, cert-manager's csi-driver-spiffe and Istio issue), or its subject
// when it has none. A certificate with several SPIFFE ids names no one.

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
  const uris = (cert.subjectaltname ?? "")
    .split(/,\s*/)
    .filter((s) => s.startsWith("URI:spiffe://"))
    .map((s) => s.slice("URI:".length));
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

/** "CN=billing,O=example": the subject's attributes in the certificate's order. */
function subjectText(subject: PeerCertificate["subject"] | undefined): string {
  if (subject === undefined || subject === null) return "";
  return Object.entries(subject)
    .flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => `${k}=${x}`) : [`${k}=${v}`]))
    .join(",");
}
