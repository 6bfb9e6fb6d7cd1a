// `tokenvend`, the operator's command, run as a process the way an operator runs it: every
// subcommand's help, a success and the errors (exit 1 for a failed operation, 2 for bad usage or
// configuration, the flag or option named). Stores are real file stores; token and health call a
// real replica in front of the real oidc-provider. MongoDB's side (the reencrypt preflight,
// bootstrap across replicas) is in cli-mongo.test.ts.

import { spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import test from "ava";
import { GetTokenRequestSchema } from "../gen/tokenvend/v1/token_service_pb.js";
import { generateApiKey } from "../src/auth/index.ts";
import { grantKey, sessionKey, type TokenRecord } from "../src/core/token.ts";
import { createFileStore } from "../src/store/file-store.ts";
import { createKeyring, generateKey, parseKeyring, parseKeys } from "../src/store/sealing.ts";
import { cleanEnv, tokenvend } from "./support/cli.ts";
import { startStack } from "./support/stack.ts";

const commands = [
  "serve",
  "dev",
  "check-config",
  "keygen",
  "reencrypt",
  "export",
  "import",
  "token",
  "health",
];

let dir: string;
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "tokenvend-cli-"));
});
test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});
let n = 0;
const fresh = (name: string) => join(dir, `${name}-${n++}`);
const json = (text: string) => JSON.parse(text) as Record<string, unknown>;

test("tokenvend lists every command, and each one's --help exits 0", async (t) => {
  const overview = await tokenvend(["--help"]);
  t.is(overview.code, 0);
  for (const c of commands) t.regex(overview.stdout, new RegExp(`^  ${c} `, "m"), c);
  await Promise.all(
    commands.map(async (c) => {
      const help = await tokenvend([c, "--help"]);
      t.is(help.code, 0, c);
      t.true(help.stdout.startsWith(`Usage: tokenvend ${c}`), c);
      t.regex(help.stdout, /\nOptions:\n(.|\n)*-h, --help/, c);
      t.is((await tokenvend(["help", c])).stdout, help.stdout, c);
    }),
  );
});

test("no command, an unknown command or an unknown flag: exit 2, saying what is wrong", async (t) => {
  const none = await tokenvend([]);
  t.is(none.code, 2);
  t.regex(none.stderr, /Usage: tokenvend COMMAND/);
  const unknown = await tokenvend(["exprot"]);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown command "exprot"/);
  const flag = await tokenvend(["export", "--outt", "x"]);
  t.is(flag.code, 2);
  t.regex(flag.stderr, /tokenvend export: Unknown option '--outt'/);
  t.regex(flag.stderr, /tokenvend export --help/);
  await Promise.all(
    commands.map(async (c) => {
      const bad = await tokenvend([c, "--no-such-flag"]);
      t.is(bad.code, 2, c);
      t.regex(bad.stderr, new RegExp(`^tokenvend ${c}: Unknown option '--no-such-flag'`), c);
    }),
  );
});

test("npx tokenvend runs the package's bin from the checkout", async (t) => {
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn("npx", ["--no-install", "tokenvend", "keygen", "--raw"], {
      cwd: new URL("..", import.meta.url).pathname,
      env: cleanEnv(),
      stdio: ["ignore", "pipe", "ignore"],
    });
    let s = "";
    child.stdout.on("data", (b: Buffer) => {
      s += b;
    });
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(s) : reject(new Error(`exit ${code}`))));
  });
  t.is(Buffer.from(out.trim(), "base64").length, 32);
});

test("keygen: a key in the form the keyring takes; --raw for key files; a bad id exits 2", async (t) => {
  const plain = await tokenvend(["keygen", "--id", "rotation-2"]);
  t.is(plain.code, 0);
  const [key] = parseKeys(plain.stdout.trim());
  t.is(key?.id, "rotation-2");
  t.is(key?.key.length, 32);
  const dflt = await tokenvend(["keygen", "--json"]);
  const j = json(dflt.stdout);
  t.regex(j.id as string, /^k\d{8}$/);
  t.is(j.entry, `${j.id}:${j.key}`);
  const raw = await tokenvend(["keygen", "--raw"]);
  t.is(Buffer.from(raw.stdout.trim(), "base64").length, 32);
  t.not(raw.stdout, (await tokenvend(["keygen", "--raw"])).stdout, "every key is new");
  const bad = await tokenvend(["keygen", "--id", "no spaces"]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--id must be/);
});

const providerYaml = (extra = "") =>
  [
    "logLevel: warn",
    "providers:",
    "  corp:",
    "    tokenEndpoint: http://127.0.0.1:9/token",
    "    clientId: tokenvend",
    "    clientSecretEnv: CORP_SECRET",
    "grants:",
    "  billing: { provider: corp, scopes: [billing.read] }",
    extra,
  ].join("\n");

test("check-config: what the config resolves to and its digest, without secrets; a bad option exits 2", async (t) => {
  const config = fresh("config.yaml");
  await writeFile(config, providerYaml("syncInterval: 2s"));
  const secret = `secret-${randomBytes(8).toString("hex")}`;
  const keys = `a:${generateKey()}`;
  const env = {
    CORP_SECRET: secret,
    TOKENVEND_DATA_DIR: fresh("data"),
    TOKENVEND_ENCRYPTION_KEYS: keys,
  };
  const ok = await tokenvend(["check-config", "--config", config, "--json"], { env });
  t.is(ok.code, 0, ok.stderr);
  const out = json(ok.stdout) as {
    digest: string;
    config: Record<string, unknown> & { providers: { corp: { clientSecret: string } } };
  };
  t.regex(out.digest, /^sha256:[0-9a-f]{64}$/);
  t.is(out.config.syncIntervalMs, 2000);
  t.deepEqual(out.config.encryptionKeyIds, ["a"]);
  t.is(out.config.providers.corp.clientSecret, "set");
  t.false(ok.stdout.includes(secret));
  t.false(ok.stdout.includes(keys.slice(2)));
  const human = await tokenvend(["check-config"], { env: { ...env, TOKENVEND_CONFIG: config } });
  t.regex(human.stdout, /^configuration OK: /);
  t.true(human.stdout.includes(out.digest), "the same config, the same digest");
  const changed = await tokenvend(["check-config", "--config", config, "--json"], {
    env: { ...env, TOKENVEND_GRPC_LISTEN: "127.0.0.1:6000" },
  });
  t.not(json(changed.stdout).digest, out.digest);

  await writeFile(config, providerYaml("syncInterval: soon"));
  const bad = await tokenvend(["check-config", "--config", config], { env });
  t.is(bad.code, 2);
  t.regex(bad.stderr, /invalid configuration: syncInterval must be a duration/);
  await writeFile(config, providerYaml());
  const keyless = await tokenvend(["check-config", "--config", config], {
    env: { CORP_SECRET: "x", TOKENVEND_DATA_DIR: fresh("data") },
  });
  t.is(keyless.code, 2);
  t.regex(keyless.stderr, /needs an encryption key/);
});

test("check-config leaves out every kind of secret a provider holds: rotated client secrets, a private key, a webhook secret", async (t) => {
  const config = fresh("config.yaml");
  const keyFile = fresh("client.pem");
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  await writeFile(keyFile, pem);
  const secrets = [1, 2, 3].map((i) => `secret-${i}-${randomBytes(8).toString("hex")}`);
  const webhook = `whsec_${randomBytes(24).toString("base64")}`;
  await writeFile(
    config,
    [
      "logLevel: warn",
      "providers:",
      "  rotating:",
      "    tokenEndpoint: http://127.0.0.1:9/token",
      "    clientId: a",
      "    clientSecretEnvs: [S1, S2]",
      "    webhook: { url: http://127.0.0.1:9/hook, secretEnv: HOOK }",
      "  signed:",
      "    tokenEndpoint: http://127.0.0.1:9/token",
      "    clientId: b",
      "    authMethod: private_key_jwt",
      `    privateKeyFile: ${keyFile}`,
      "  plain:",
      "    tokenEndpoint: http://127.0.0.1:9/token",
      "    clientId: c",
      "    clientSecretEnv: S3",
    ].join("\n"),
  );
  const env = { S1: secrets[0]!, S2: secrets[1]!, S3: secrets[2]!, HOOK: webhook };
  const res = await tokenvend(["check-config", "--config", config, "--json"], { env });
  t.is(res.code, 0, res.stderr);
  for (const s of [...secrets, webhook, webhook.slice(6)]) t.false(res.stdout.includes(s));
  const body = pem.split("\n")[1]!;
  t.false(res.stdout.includes(body), "no line of the private key");
  const providers = (
    json(res.stdout).config as { providers: Record<string, Record<string, unknown>> }
  ).providers;
  t.is(providers.rotating?.clientSecrets, "2 set");
  t.deepEqual(providers.rotating?.webhook, { url: "http://127.0.0.1:9/hook", secret: "set" });
  t.is(providers.signed?.privateKey, "set");
  t.is(providers.plain?.clientSecret, "set");
});

test("check-config leaves out the audit HMAC key and the API key hashes", async (t) => {
  const config = fresh("config.yaml");
  const hmacFile = fresh("audit-hmac");
  const hmac = randomBytes(32);
  await writeFile(hmacFile, hmac.toString("base64"));
  const keysFile = fresh("api-keys.yaml");
  const { entry } = generateApiKey("cron");
  await writeFile(keysFile, `keys:\n  - id: ${entry.id}\n    sha256: ${entry.sha256}\n`);
  await writeFile(
    config,
    [
      "logLevel: warn",
      `auth: { apiKeys: { file: ${keysFile} } }`,
      "policy: { rules: [{ name: cron, callers: ['api-key:cron'], allow: [GetToken] }] }",
      `audit: { sink: stdout, hmacKeyFile: ${hmacFile} }`,
    ].join("\n"),
  );
  const res = await tokenvend(["check-config", "--config", config, "--json"]);
  t.is(res.code, 0, res.stderr);
  for (const secret of [hmac.toString("base64"), hmac.toString("hex"), entry.sha256]) {
    t.false(res.stdout.includes(secret));
  }
  t.false(
    res.stdout.includes(`${hmac[0]},${hmac[1]},${hmac[2]}`),
    "not as a Buffer's bytes either",
  );
  const audit = (json(res.stdout).config as { audit: Record<string, unknown> }).audit;
  t.is(audit.hmacKey, "set");
});

/** A file store in a fresh directory holding `records`, sealed under `keys`. */
async function fileStoreWith(keys: string, records: readonly TokenRecord[]) {
  const data = fresh("data");
  const store = await createFileStore({ dir: data, keyring: parseKeyring(keys) });
  for (const r of records) await store.insert(r);
  await store.close();
  return data;
}

const record = (sessionId: string, accessToken: string): TokenRecord => ({
  key: sessionKey(sessionId, "corp"),
  generation: 2,
  reason: "refreshed",
  tokens: {
    accessToken,
    refreshToken: `${accessToken}-refresh`,
    tokenType: "Bearer",
    scopes: ["a"],
    issuedAt: 1_750_000_000_000,
    expiresAt: 1_750_003_600_000,
    subject: "alice",
    clientId: "web",
  },
});

test("export and import between file stores under other keys, through a key file and a passphrase", async (t) => {
  const tokens = Array.from({ length: 5 }, () => `tok-${randomBytes(10).toString("hex")}`);
  const keysA = `a:${generateKey()}`;
  const data = await fileStoreWith(keysA, [
    ...tokens.map((tok, i) => record(`s${i}`, tok)),
    { key: grantKey("billing"), generation: 3, reason: "revoked" },
  ]);
  const keyFile = join(dir, "backup-key");
  await writeFile(keyFile, (await tokenvend(["keygen", "--raw"])).stdout);
  const out = fresh("backup.tvx");
  const exported = await tokenvend(["export", "--out", out, "--key-file", keyFile, "--json"], {
    env: { TOKENVEND_DATA_DIR: data, TOKENVEND_ENCRYPTION_KEYS: keysA },
  });
  t.is(exported.code, 0, exported.stderr);
  t.like(json(exported.stdout), { records: 6, sessions: 5, grants: 0, revoked: 1 });
  t.is((await stat(out)).mode & 0o777, 0o600);
  const raw = await readFile(out, "utf8");
  for (const tok of tokens) t.false(raw.includes(tok));

  const keysB = `b:${generateKey()}`;
  const target = { TOKENVEND_DATA_DIR: fresh("data"), TOKENVEND_ENCRYPTION_KEYS: keysB };
  const dry = await tokenvend(
    ["import", "--in", out, "--key-file", keyFile, "--dry-run", "--json"],
    {
      env: target,
    },
  );
  t.is(dry.code, 0, dry.stderr);
  t.like(json(dry.stdout), { dryRun: true, read: 6, imported: 6, verified: 0 });
  const imported = await tokenvend(["import", "--in", out, "--key-file", keyFile, "--json"], {
    env: target,
  });
  t.is(imported.code, 0, imported.stderr);
  t.like(json(imported.stdout), { read: 6, imported: 6, verified: 6, mismatched: [] });
  const again = await tokenvend(["import", "--in", out, "--key-file", keyFile], { env: target });
  t.is(again.code, 0);
  t.regex(again.stdout, /^imported 0 of 6 keys \(6 present, 0 newer here, 0 conflicts\)/);

  const store = await createFileStore({
    dir: target.TOKENVEND_DATA_DIR,
    keyring: parseKeyring(keysB),
  });
  t.is((await store.getActive(sessionKey("s3", "corp")))?.tokens?.accessToken, tokens[3]);
  t.is((await store.getActive(grantKey("billing")))?.reason, "revoked");
  await store.close();

  // Through stdout and stdin, under a passphrase from the environment.
  const pass = { TOKENVEND_EXPORT_PASSPHRASE: "a long enough passphrase" };
  const piped = await tokenvend(["export", "--out", "-"], {
    env: { TOKENVEND_DATA_DIR: data, TOKENVEND_ENCRYPTION_KEYS: keysA, ...pass },
  });
  t.is(piped.code, 0, piped.stderr);
  t.regex(piped.stderr, /exported 6 keys/);
  const fromStdin = await tokenvend(["import", "--in", "-", "--json"], {
    env: { TOKENVEND_DATA_DIR: fresh("data"), TOKENVEND_ENCRYPTION_KEYS: keysB, ...pass },
    input: piped.stdout,
  });
  t.is(fromStdin.code, 0, fromStdin.stderr);
  t.like(json(fromStdin.stdout), { imported: 6, verified: 6 });
});

test("export and import errors: no secret or two (2), wrong secret (1), a locked store (1), no store (2)", async (t) => {
  const keys = `a:${generateKey()}`;
  const data = await fileStoreWith(keys, [record("s", "tok")]);
  const env = { TOKENVEND_DATA_DIR: data, TOKENVEND_ENCRYPTION_KEYS: keys };
  const out = fresh("x.tvx");
  const noSecret = await tokenvend(["export", "--out", out], { env });
  t.is(noSecret.code, 2);
  t.regex(noSecret.stderr, /an export is sealed: give --key-file/);
  const two = await tokenvend(["export", "--out", out, "--passphrase-file", "/nope"], {
    env: { ...env, TOKENVEND_EXPORT_PASSPHRASE: "a long enough passphrase" },
  });
  t.is(two.code, 2);
  t.regex(
    two.stderr,
    /give one export secret, not --passphrase-file and TOKENVEND_EXPORT_PASSPHRASE/,
  );
  const noOut = await tokenvend(["export"], { env });
  t.is(noOut.code, 2);
  t.regex(noOut.stderr, /--out is required/);
  const memory = await tokenvend(["export", "--out", out], {
    env: { TOKENVEND_EXPORT_PASSPHRASE: "a long enough passphrase" },
  });
  t.is(memory.code, 2);
  t.regex(memory.stderr, /no store is configured/);

  const pass = { TOKENVEND_EXPORT_PASSPHRASE: "a long enough passphrase" };
  t.is((await tokenvend(["export", "--out", out], { env: { ...env, ...pass } })).code, 0);
  const wrong = await tokenvend(["import", "--in", out], {
    env: { ...env, TOKENVEND_EXPORT_PASSPHRASE: "another long passphrase" },
  });
  t.is(wrong.code, 1);
  t.regex(wrong.stderr, /does not open: the wrong key or passphrase/);

  // A replica holds the store: the command says so instead of writing beside it.
  const holder = await createFileStore({ dir: data, keyring: parseKeyring(keys) });
  t.teardown(() => holder.close());
  const locked = await tokenvend(["export", "--out", fresh("y.tvx")], { env: { ...env, ...pass } });
  t.is(locked.code, 1);
  t.regex(locked.stderr, /tokenvend export: .*(locked|in use)/i);
});

test("reencrypt on a file store: --dry-run counts, then every value moves to the new primary", async (t) => {
  const oldKey = `old:${generateKey()}`;
  const newKey = `new:${generateKey()}`;
  const data = await fileStoreWith(oldKey, [record("s1", "t1"), record("s2", "t2")]);
  const env = { TOKENVEND_DATA_DIR: data, TOKENVEND_ENCRYPTION_KEYS: `${newKey},${oldKey}` };
  const dry = await tokenvend(["reencrypt", "--dry-run", "--json"], { env });
  t.is(dry.code, 0, dry.stderr);
  t.like(json(dry.stdout), { dryRun: true, scanned: 2, resealed: 2, fromKeys: { old: 2 } });
  const real = await tokenvend(["reencrypt"], { env });
  t.is(real.code, 0, real.stderr);
  t.regex(real.stdout, /^re-sealed 2 of 2 documents/);
  const onlyNew = await createFileStore({
    dir: data,
    keyring: createKeyring(parseKeys(newKey)),
  });
  t.is((await onlyNew.getActive(sessionKey("s2", "corp")))?.tokens?.accessToken, "t2");
  await onlyNew.close();
  const memory = await tokenvend(["reencrypt"]);
  t.is(memory.code, 2);
  t.regex(memory.stderr, /no store is configured/);
});

test("token and health against a running replica: the token alone on stdout, statuses and errors", async (t) => {
  const s = await startStack();
  t.teardown(s.stop);
  const address = ["--address", s.grpcAddress];
  const demo = await s.client.getToken(create(GetTokenRequestSchema, { grant: "demo" }));
  const grant = await tokenvend(["token", "--grant", "demo", ...address]);
  t.is(grant.code, 0, grant.stderr);
  t.is(grant.stdout, `${demo.credential?.accessToken}\n`);

  const minted = await s.mint();
  await s.store("cli-session", minted, 300);
  const session = await tokenvend(
    ["token", "--session", "cli-session", "--provider", "idp", "--json", ...address],
    { env: {} },
  );
  t.is(session.code, 0, session.stderr);
  t.like(json(session.stdout), {
    accessToken: minted.accessToken,
    tokenType: "Bearer",
    generation: 1,
  });

  const missing = await tokenvend([
    "token",
    "--session",
    "nobody",
    "--provider",
    "idp",
    ...address,
  ]);
  t.is(missing.code, 1);
  t.is(missing.stdout, "");
  t.regex(missing.stderr, /^tokenvend token: NOT_FOUND \(SESSION_NOT_FOUND\): /);
  const both = await tokenvend(["token", "--grant", "demo", "--session", "x", ...address]);
  t.is(both.code, 2);
  t.regex(both.stderr, /give --grant NAME, or --session ID with --provider NAME/);

  const healthy = await tokenvend(["health", ...address]);
  t.is(healthy.code, 0, healthy.stderr);
  t.is(healthy.stdout, "SERVING\n");
  const svc = await tokenvend([
    "health",
    "--service",
    "tokenvend.v1.TokenService",
    "--json",
    ...address,
  ]);
  t.like(json(svc.stdout), { service: "tokenvend.v1.TokenService", status: "SERVING" });
  const unknown = await tokenvend(["health", "--service", "no.such.Service", ...address]);
  t.is(unknown.code, 1);
  await s.stop();
  const down = await tokenvend(["health", "--timeout", "2s", ...address]);
  t.is(down.code, 1);
  t.regex(down.stderr, /tokenvend health: UNAVAILABLE/);
});

test("serve --config runs a replica that health reaches; SIGTERM drains it and exits 0", async (t) => {
  const config = fresh("serve.yaml");
  await writeFile(
    config,
    // Authentication off, as npm start allows only on loopback listeners.
    "logLevel: info\nauth: { disabled: true }\ngrpc: { listen: 127.0.0.1:0 }\nhttp: { listen: 127.0.0.1:0 }\n",
  );
  const child = spawn(process.execPath, ["src/cli/main.ts", "serve", "--config", config], {
    cwd: new URL("..", import.meta.url).pathname,
    env: cleanEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.teardown(() => child.kill("SIGKILL"));
  const grpc = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (b: Buffer) => {
      const m = /"grpc":"([^"]+)".*"msg":"tokenvend serving"/.exec(b.toString());
      if (m?.[1]) resolve(m[1]);
    });
    child.once("exit", (code) => reject(new Error(`serve exited (${code})`)));
  });
  t.is((await tokenvend(["health", "--address", grpc])).stdout, "SERVING\n");
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  t.is(await exited, 0);
  const bad = await tokenvend(["serve", "--config", join(dir, "missing.yaml")]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /tokenvend serve: invalid configuration: TOKENVEND_CONFIG: cannot read/);
});

test("serve exits 1 when the tokens to preload cannot be stored (the database is unreachable)", async (t) => {
  const config = fresh("unreachable.yaml");
  await writeFile(
    config,
    providerYaml(
      "auth: { disabled: true }\ngrpc: { listen: 127.0.0.1:0 }\nhttp: { listen: 127.0.0.1:0 }",
    ),
  );
  const res = await tokenvend(["serve", "--config", config], {
    env: {
      CORP_SECRET: "x",
      MONGODB_URI: "mongodb://127.0.0.1:1",
      TOKENVEND_ENCRYPTION_KEYS: `a:${generateKey()}`,
      TOKENVEND_BOOTSTRAP: "grants: [{ grant: billing, accessToken: boot-secret, expiresIn: 1h }]",
    },
  });
  t.is(res.code, 1);
  t.regex(
    res.stderr,
    /tokenvend serve: failed to start: could not store the bootstrap tokens: .*unreachable/,
  );
  t.false(res.stderr.includes("boot-secret"));
});
