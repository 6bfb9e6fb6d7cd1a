// The audit stream (audit-sink.ts): one JSON line per decision and per
// token-bearing operation, session ids HMAC'd, never token material.

export type { AuditRecord, AuditSink, AuditSinkOptions, AuditTarget } from "./audit-sink.ts";
export { AuditUnavailableError, createAuditSink } from "./audit-sink.ts";
