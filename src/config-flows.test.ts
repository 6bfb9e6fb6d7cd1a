// The flows' options as config reads them: defaults from config-defaults.ts, secrets and keys
// from files or variables only, and errors that name the option.

import { generateKeyPairSync } from "node:crypto";
import test from "ava";
import { ConfigError, configDefaults, parseConfig } from "./config.ts";

const pem = generateKeyPairSync("ec", { namedCurve: "P-256" })
  .privateKey.export({ format: "pem", type: "pkcs8" })
  .toString();
const files: Record<string, string> = {
  "/s/old": "old-secret\n",
  "/s/new": "new-secret\n",
  "/k/key.pem": pem,
  "/k/not-a-key": "hello",
  "/h/secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
};
const env = { CORP_SECRET: "env-secret", NEXT: "next-secret" };
const read = (path: string) => {
  const v = files[path];
  if (v === undefined) throw Object.assign(new Error("no such file"), { code: "ENOENT" });
  return v;
};
const parse = (provider: Record<string, unknown>, root: Record<string, unknown> = {}) =>
  parseConfig(
    {
      ...root,
      providers: { corp: { issuer: "https://login.example.com", clientId: "tv", ...provider } },
    },
    { env, readFile: read },
  );
const corp = (provider: Record<string, unknown>, root?: Record<string, unknown>) =>
  parse(provider, root).providers.get("corp");
const error = (provider: Record<string, unknown>, root?: Record<string, unknown>) =>
  (() => {
    try {
      parse(provider, root);
    } catch (err) {
      if (err instanceof ConfigError) return err.message;
      throw err;
    }
    return "";
  })();

test("defaults: no redirect URIs, openid and offline_access, no exchange, no unused refresh, no webhook", (t) => {
  const p = corp({ clientSecretEnv: "CORP_SECRET" });
  t.deepEqual(p?.redirectUris, []);
  t.deepEqual(p?.authorizationScopes, configDefaults.authorizationScopes);
  t.false(p?.tokenExchange);
  t.is(p?.maxUnusedRefreshMs, 0);
  t.is(p?.webhook, undefined);
  t.deepEqual(p?.clientSecrets, ["env-secret"]);
  const flows = parse({ clientSecretEnv: "CORP_SECRET" }).flows;
  t.is(flows.authorizationStateTtlMs, configDefaults.authorizationStateTtlMs);
  t.is(flows.unusedRefreshRatePerSecond, configDefaults.unusedRefreshRatePerSecond);
});

test("several secrets: the first from clientSecretFile/Env, then the lists, in order", (t) => {
  const p = corp({
    clientSecretFile: "/s/old",
    clientSecretFiles: ["/s/new"],
    clientSecretEnvs: ["NEXT"],
  });
  t.deepEqual(p?.clientSecrets, ["old-secret", "new-secret", "next-secret"]);
  t.is(p?.clientSecret, "old-secret");
  t.regex(
    error({ clientSecretFiles: ["/s/missing"] }),
    /providers\.corp\.clientSecretFiles\[0\]: cannot read \/s\/missing: ENOENT/,
  );
  t.regex(
    error({ clientSecretEnvs: ["UNSET"] }),
    /providers\.corp\.clientSecretEnvs\[0\]: environment variable UNSET is not set/,
  );
});

test("private_key_jwt takes a PEM key file, and says so when it is missing or not a key", (t) => {
  const p = corp({
    authMethod: "private_key_jwt",
    privateKeyFile: "/k/key.pem",
    privateKeyId: "k1",
  });
  t.deepEqual(p?.privateKey, { pem: pem.trim(), kid: "k1" });
  t.is(p?.clientSecrets, undefined);
  t.regex(
    error({ authMethod: "private_key_jwt" }),
    /providers\.corp: authMethod private_key_jwt needs providers\.corp\.privateKeyFile/,
  );
  t.regex(
    error({ authMethod: "private_key_jwt", privateKeyFile: "/k/not-a-key" }),
    /providers\.corp\.privateKeyFile: \/k\/not-a-key is not a PEM private key/,
  );
  t.regex(
    error({ authMethod: "nope", clientSecretEnv: "CORP_SECRET" }),
    /authMethod must be client_secret_basic, client_secret_post, private_key_jwt or none/,
  );
});

test("flow options: redirect URIs, scopes, token exchange, maxUnusedRefresh in days, a webhook", (t) => {
  const p = corp({
    clientSecretEnv: "CORP_SECRET",
    redirectUris: ["https://app.example.com/callback"],
    authorizationScopes: ["openid", "email"],
    tokenExchange: true,
    maxUnusedRefresh: "30d",
    webhook: { url: "https://app.example.com/hooks/tokenvend", secretFile: "/h/secret" },
  });
  t.deepEqual(p?.redirectUris, ["https://app.example.com/callback"]);
  t.deepEqual(p?.authorizationScopes, ["openid", "email"]);
  t.true(p?.tokenExchange);
  t.is(p?.maxUnusedRefreshMs, 30 * 86_400_000);
  t.deepEqual(p?.webhook, {
    url: "https://app.example.com/hooks/tokenvend",
    secret: files["/h/secret"],
  });
});

test("bad flow options name the option", (t) => {
  const s = { clientSecretEnv: "CORP_SECRET" };
  t.regex(
    error({ ...s, redirectUris: ["/relative"] }),
    /providers\.corp\.redirectUris\[0\] must be an absolute http\(s\) URL/,
  );
  t.regex(
    error({ ...s, redirectUris: ["https://a.example/cb#frag"] }),
    /redirectUris\[0\] must be an absolute http\(s\) URL without a fragment/,
  );
  t.regex(
    error({ ...s, maxUnusedRefresh: "soon" }),
    /providers\.corp\.maxUnusedRefresh must be a duration/,
  );
  t.regex(
    error({ ...s, webhook: { url: "https://a.example/h" } }),
    /providers\.corp\.webhook: set secretFile or secretEnv/,
  );
  t.regex(
    error({ ...s, webhook: { secretFile: "/h/secret" } }),
    /providers\.corp\.webhook\.url is required/,
  );
  t.regex(
    error({ ...s, webhook: { url: "https://a.example/h", secretEnv: "CORP_SECRET" } }),
    /base64 secret/,
  );
  t.regex(
    error({ ...s, tokenExchange: "yes" }),
    /providers\.corp\.tokenExchange must be true or false/,
  );
  t.regex(error(s, { authorizationStateTtl: "10ms" }), /authorizationStateTtl must be at least 1s/);
  t.regex(
    error(s, { unusedRefresh: { ratePerSecond: 0 } }),
    /unusedRefresh\.ratePerSecond must be a number from 0\.01 to 1000/,
  );
  t.regex(error(s, { unusedRefresh: { every: "1s" } }), /unusedRefresh\.every is not an option/);
  t.regex(
    error(s, { webhooks: { maxAttempts: 0 } }),
    /webhooks\.maxAttempts must be a number from 1 to 100/,
  );
});
