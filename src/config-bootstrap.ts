// Tokens preloaded at start (single-node setups, first deployments): a YAML or JSON document of
// `sessions` and `grants`, from the file `bootstrap.file` / TOKENVEND_BOOTSTRAP_FILE (a Secret
// mount: it holds tokens) and/or inline in TOKENVEND_BOOTSTRAP. Validated here, once; stored by
// ops/seed.ts only where a key has no generation at all, so restarts and replicas agree.
//
//   sessions:
//     - sessionId: build-bot        provider: corp (a configured provider)
//       refreshToken: …             accessToken: … (at least one of the two)
//       expiresIn: 1h | expiresAt: 2026-12-01T00:00:00Z   (with an access token)
//       idToken, tokenType (Bearer), scopes, subject, clientId: optional
//       owner: the caller id (or policy tenant) the session belongs to, with authentication on
//   grants:
//     - grant: billing-api (a configured grant)   accessToken: …   expiresIn | expiresAt

import { parse as parseYaml } from "yaml";
import { ConfigError, duration, known, obj, str, strList } from "./config-values.ts";
import { grantKey, keyId, sessionKey } from "./core/token.ts";
import type { BootstrapToken } from "./ops/seed.ts";

export type { BootstrapToken } from "./ops/seed.ts";

export interface BootstrapSources {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile: (path: string) => string;
  /** The config's `bootstrap` mapping, if any. */
  readonly section: unknown;
  readonly providers: ReadonlySet<string>;
  readonly grants: ReadonlySet<string>;
}

/** Every preloaded token; throws ConfigError naming the source, entry and field. */
export function parseBootstrap(src: BootstrapSources): BootstrapToken[] {
  const section = obj(src.section ?? {}, "bootstrap");
  known(section, "bootstrap", ["file"]);
  const envFile = src.env.TOKENVEND_BOOTSTRAP_FILE;
  const file = envFile || str(section.file, "bootstrap.file");
  const docs: { at: string; text: string }[] = [];
  if (file !== undefined && file !== "") {
    const at = envFile ? `TOKENVEND_BOOTSTRAP_FILE (${file})` : `bootstrap.file (${file})`;
    try {
      docs.push({ at, text: src.readFile(file) });
    } catch (err) {
      throw new ConfigError(`${at}: cannot be read: ${(err as Error).message}`);
    }
  }
  if (src.env.TOKENVEND_BOOTSTRAP)
    docs.push({ at: "TOKENVEND_BOOTSTRAP", text: src.env.TOKENVEND_BOOTSTRAP });

  const out: BootstrapToken[] = [];
  const seen = new Map<string, string>();
  for (const { at, text } of docs) {
    let raw: unknown;
    try {
      raw = parseYaml(text) ?? {};
    } catch (err) {
      // The YAML error quotes the text around it, which may be a token: say where, not what.
      const pos = (err as { linePos?: { line: number }[] }).linePos?.[0]?.line;
      throw new ConfigError(`${at}: not valid YAML or JSON${pos ? ` (line ${pos})` : ""}`);
    }
    const doc = obj(raw, at);
    known(doc, at, ["sessions", "grants"]);
    for (const [list, kind] of [
      [doc.sessions, "sessions"],
      [doc.grants, "grants"],
    ] as const) {
      if (list === undefined || list === null) continue;
      if (!Array.isArray(list)) throw new ConfigError(`${at}: ${kind} must be a list`);
      for (const [i, entry] of list.entries()) {
        const where = `${at}: ${kind}[${i}]`;
        const token = kind === "sessions" ? session(entry, where, src) : grant(entry, where, src);
        const id = keyId(token.key);
        const before = seen.get(id);
        if (before !== undefined)
          throw new ConfigError(`${where} preloads the same key as ${before}`);
        seen.set(id, where);
        out.push(token);
      }
    }
  }
  return out;
}

const tokenFields = ["accessToken", "idToken", "tokenType", "scopes", "expiresIn", "expiresAt"];

function session(v: unknown, at: string, src: BootstrapSources): BootstrapToken {
  const e = obj(v, at);
  known(e, at, [
    "sessionId",
    "provider",
    "refreshToken",
    "subject",
    "clientId",
    "owner",
    ...tokenFields,
  ]);
  const sessionId = str(e.sessionId, `${at}.sessionId`);
  const provider = str(e.provider, `${at}.provider`);
  if (!sessionId) throw new ConfigError(`${at}.sessionId is required`);
  if (provider === undefined || !src.providers.has(provider)) {
    throw new ConfigError(
      `${at}.provider must name a configured provider; got "${provider ?? ""}"`,
    );
  }
  const refreshToken = str(e.refreshToken, `${at}.refreshToken`) || undefined;
  if (refreshToken === undefined && !e.accessToken) {
    throw new ConfigError(`${at} needs a refreshToken or an accessToken`);
  }
  return {
    ...tokens(e, at),
    key: sessionKey(sessionId, provider),
    refreshToken,
    subject: str(e.subject, `${at}.subject`),
    clientId: str(e.clientId, `${at}.clientId`),
    owner: str(e.owner, `${at}.owner`) || undefined,
  };
}

function grant(v: unknown, at: string, src: BootstrapSources): BootstrapToken {
  const e = obj(v, at);
  known(e, at, ["grant", ...tokenFields]);
  const name = str(e.grant, `${at}.grant`);
  if (name === undefined || !src.grants.has(name)) {
    throw new ConfigError(`${at}.grant must name a configured grant; got "${name ?? ""}"`);
  }
  if (!e.accessToken) throw new ConfigError(`${at}.accessToken is required`);
  return {
    ...tokens(e, at),
    key: grantKey(name),
    refreshToken: undefined,
    subject: undefined,
    clientId: undefined,
    owner: undefined,
  };
}

function tokens(e: Record<string, unknown>, at: string) {
  const accessToken = str(e.accessToken, `${at}.accessToken`) ?? "";
  const expiresAt = str(e.expiresAt, `${at}.expiresAt`);
  if (expiresAt !== undefined && e.expiresIn !== undefined) {
    throw new ConfigError(`${at}: give expiresIn or expiresAt, not both`);
  }
  const atMs = expiresAt === undefined ? undefined : Date.parse(expiresAt);
  if (atMs !== undefined && !Number.isFinite(atMs)) {
    throw new ConfigError(`${at}.expiresAt must be an ISO 8601 time such as 2026-12-01T00:00:00Z`);
  }
  if (accessToken !== "" && atMs === undefined && e.expiresIn === undefined) {
    throw new ConfigError(`${at}: an accessToken needs expiresIn or expiresAt`);
  }
  return {
    accessToken,
    idToken: str(e.idToken, `${at}.idToken`),
    tokenType: str(e.tokenType, `${at}.tokenType`) ?? "Bearer",
    scopes: strList(e.scopes, `${at}.scopes`),
    expiry: atMs !== undefined ? { atMs } : { inMs: duration(e.expiresIn, `${at}.expiresIn`, 0) },
  };
}
