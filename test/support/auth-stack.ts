// A stack with caller authentication on: a loopback JWKS issuer whose
// Kubernetes-shaped tokens the service trusts, an API key in a keys file
// (stored as its hash), a policy, and the audit stream in a file.

import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateApiKey, permissions } from "../../src/auth/index.ts";
import { type JwksIssuer, startJwksIssuer } from "./jwks-issuer.ts";
import { type Stack, type StackOptions, startStack } from "./stack.ts";

export interface AuthStack extends Stack {
  readonly issuer: JwksIssuer;
  /** A valid API key (api-key:ci, allowed like the apps namespace). */
  readonly apiKey: string;
  readonly dir: string;
  readonly auditFile: string;
  readonly auditKey: Buffer;
  /** A token of system:serviceaccount:NS:NAME, bearer-ready. */
  bearer(namespace: string, name: string): Promise<string>;
  /** Every audit record written so far. */
  auditRecords(): Promise<Record<string, unknown>[]>;
}

/** The shipped shape of a policy: apps may do everything on provider idp and grant demo, their own sessions. */
export const testPolicy = {
  rules: [
    {
      name: "apps",
      callers: ["system:serviceaccount:apps:*", "api-key:ci", "spiffe://example.test/ns/apps/*"],
      allow: [...permissions],
      providers: ["*"],
      grants: ["demo"],
      sessions: "own",
    },
    {
      // A gateway reads any session whose end user's session JWT it shows.
      name: "gateway",
      callers: ["system:serviceaccount:gateway:*"],
      allow: ["GetValidTokens", "WatchToken"],
      providers: ["idp"],
      sessions: "token",
    },
    {
      // Operators read any session of provider idp (cross-owner), and nothing else.
      name: "ops",
      callers: ["system:serviceaccount:ops:*"],
      allow: ["GetValidTokens", "GetAllUpstreamCredentials"],
      providers: ["idp"],
      sessions: "any",
    },
    {
      // A login component and a reader sharing the tenant "web": its sessions are the tenant's.
      name: "web-login",
      callers: ["system:serviceaccount:web:login"],
      allow: ["StoreUpstreamTokens"],
      providers: ["idp"],
      tenant: "web",
    },
    {
      name: "web-reader",
      callers: ["system:serviceaccount:web:reader"],
      allow: ["GetValidTokens"],
      providers: ["idp"],
      tenant: "web",
    },
    {
      name: "readers",
      callers: ["system:serviceaccount:readers:*"],
      allow: ["GetToken"],
      grants: ["other"],
    },
  ],
};

export async function startAuthStack(
  opts: StackOptions & { auth?: Record<string, unknown>; audit?: Record<string, unknown> } = {},
): Promise<AuthStack> {
  const issuer = await startJwksIssuer();
  const dir = await mkdtemp(join(tmpdir(), "tokenvend-auth-"));
  const { key, entry } = generateApiKey("ci");
  const keysFile = join(dir, "api-keys.yaml");
  await writeFile(keysFile, `keys:\n  - id: ${entry.id}\n    sha256: ${entry.sha256}\n`);
  const auditFile = join(dir, "audit.jsonl");
  const auditKey = Buffer.alloc(32, 9);
  const stack = await startStack({
    ...opts,
    env: { TOKENVEND_AUDIT_HMAC_KEY: auditKey.toString("base64"), ...opts.env },
    metadata: {
      authorization: `Bearer ${await issuer.sign({ namespace: "apps", name: "alice", expiresIn: 3600 })}`,
    },
    config: {
      auth: {
        jwt: {
          issuers: [{ issuer: issuer.issuer, audiences: ["tokenvend"], jwksCooldown: "200ms" }],
        },
        apiKeys: { file: keysFile },
        ...opts.auth,
      },
      policy: testPolicy,
      // Written before each answer leaves: what a test reads after a call is there.
      audit: { sink: "file", file: auditFile, failClosed: true, ...opts.audit },
      ...opts.config,
    },
  });
  return {
    ...stack,
    issuer,
    apiKey: key,
    dir,
    auditFile,
    auditKey,
    bearer: async (namespace, name) => `Bearer ${await issuer.sign({ namespace, name })}`,
    async auditRecords() {
      const text = await readFile(auditFile, "utf8").catch(() => "");
      return text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async stop() {
      await stack.stop();
      await issuer.stop();
    },
  };
}
