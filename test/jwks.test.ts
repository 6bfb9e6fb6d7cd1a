// The issuer's key set as the verifier keeps it, against a real JWKS endpoint
// on loopback: keys rotate mid-test, the endpoint goes down, and a token whose
// key is cached keeps verifying while one with an unknown key fails closed;
// an unknown key refetches at most once per cooldown, one fetch in flight.

import test from "ava";
import { AuthError, createJwtVerifier, type JwtVerifier } from "../src/auth/index.ts";
import { type JwksIssuer, startJwksIssuer } from "./support/jwks-issuer.ts";

function verifier(
  issuer: JwksIssuer,
  now: () => number,
  over: Record<string, unknown> = {},
  cacheEntries = 0,
): JwtVerifier {
  return createJwtVerifier({
    issuers: [
      {
        issuer: issuer.issuer,
        kind: "kubernetes",
        audiences: ["tokenvend"],
        algorithms: ["RS256"],
        clockToleranceMs: 0,
        jwksCooldownMs: 10_000,
        jwksMaxAgeMs: 60_000,
        jwksTimeoutMs: 2_000,
        ...over,
      },
    ],
    cacheEntries,
    now,
  });
}

const reason = async (p: Promise<unknown>) => {
  try {
    await p;
    return "OK";
  } catch (err) {
    return err instanceof AuthError ? err.reason : String(err);
  }
};

test("a key rotated in is fetched on its first token; a key rotated out stops verifying", async (t) => {
  const issuer = await startJwksIssuer();
  t.teardown(issuer.stop);
  let now = Date.now();
  const v = verifier(issuer, () => now);
  const oldKid = issuer.kids[0] as string;
  t.is((await v.verify(await issuer.sign({ name: "a" }))).id, "system:serviceaccount:apps:a");
  t.deepEqual(issuer.requests, { jwks: 1, discovery: 1 });

  await issuer.rotate(true);
  now += 10_000; // past the cooldown
  t.is(await reason(v.verify(await issuer.sign({ name: "b" }))), "OK");
  t.is(issuer.requests.jwks, 2, "the new key id made one fetch");
  t.is(
    await reason(v.verify(await issuer.sign({ name: "c", kid: oldKid }))),
    "OK",
    "both keys verify",
  );

  await issuer.rotate(false);
  now += 10_000;
  t.is(await reason(v.verify(await issuer.sign({ name: "d" }))), "OK");
  t.is(await reason(v.verify(await issuer.sign({ name: "e", kid: oldKid }))), "UNKNOWN_KEY");
});

test("with the endpoint down, cached keys keep verifying (even past their max age) and unknown keys fail closed, refetched once per cooldown", async (t) => {
  const issuer = await startJwksIssuer();
  t.teardown(issuer.stop);
  let now = Date.now();
  const v = verifier(issuer, () => now);
  t.is(await reason(v.verify(await issuer.sign({ name: "a" }))), "OK");
  issuer.setDown(true);
  const fetched = issuer.requests.jwks;

  now += 120_000; // the set is past its max age: a background refresh is tried, and fails
  t.is(await reason(v.verify(await issuer.sign({ name: "b" }))), "OK");
  await new Promise((r) => setTimeout(r, 50));
  t.is(issuer.requests.jwks, fetched + 1);

  const unknown = await issuer.sign({ name: "c", foreignKey: true, kid: "not-published" });
  t.is(await reason(v.verify(unknown)), "UNKNOWN_KEY");
  t.is(await reason(v.verify(unknown)), "UNKNOWN_KEY");
  t.is(issuer.requests.jwks, fetched + 1, "within the cooldown: no fetch");
  now += 10_000;
  t.is(await reason(v.verify(unknown)), "UNKNOWN_KEY");
  t.is(issuer.requests.jwks, fetched + 2, "after the cooldown: one fetch, which failed");

  issuer.setDown(false);
  t.is(await reason(v.verify(await issuer.sign({ name: "d" }))), "OK");
});

test("the key set has never been fetched and the endpoint is down: JWKS_UNAVAILABLE", async (t) => {
  const issuer = await startJwksIssuer();
  t.teardown(issuer.stop);
  issuer.setDown(true);
  const v = verifier(issuer, () => Date.now());
  t.is(await reason(v.verify(await issuer.sign({ name: "a" }))), "JWKS_UNAVAILABLE");
});

test("many tokens with a new key at once make one fetch", async (t) => {
  const issuer = await startJwksIssuer();
  t.teardown(issuer.stop);
  let now = Date.now();
  const v = verifier(issuer, () => now);
  await v.verify(await issuer.sign({ name: "a" }));
  await issuer.rotate(true);
  now += 10_000;
  const tokens = await Promise.all(
    Array.from({ length: 20 }, (_, i) => issuer.sign({ name: `n${i}` })),
  );
  const before = issuer.requests.jwks;
  const results = await Promise.all(tokens.map((tok) => reason(v.verify(tok))));
  t.deepEqual(new Set(results), new Set(["OK"]));
  t.is(issuer.requests.jwks, before + 1);
});

test("a verified token is served from the cache until it expires, then refused", async (t) => {
  const issuer = await startJwksIssuer();
  t.teardown(issuer.stop);
  let now = Date.now();
  const v = verifier(issuer, () => now, {}, 10);
  const token = await issuer.sign({ name: "a", expiresIn: 60 });
  t.is(await reason(v.verify(token)), "OK");
  issuer.setDown(true);
  t.is(await reason(v.verify(token)), "OK");
  now += 61_000;
  t.is(await reason(v.verify(token)), "TOKEN_EXPIRED");
});

test("an OIDC issuer may not mint a subject shaped like another kind of caller (service account, API key, SPIFFE id, certificate subject), and a Kubernetes token's claims must match its subject", async (t) => {
  const issuer = await startJwksIssuer();
  t.teardown(issuer.stop);
  const oidc = verifier(issuer, () => Date.now(), { kind: "oidc" });
  t.is(await reason(oidc.verify(await issuer.sign({ name: "a" }))), "INVALID_CLAIMS");
  for (const sub of [
    "api-key:billing-cron",
    "spiffe://example.org/ns/billing/x",
    "CN=admin,O=corp",
    "system:admin",
  ]) {
    t.is(await reason(oidc.verify(await issuer.sign({ claims: { sub } }))), "INVALID_CLAIMS", sub);
  }
  t.is(await reason(oidc.verify(await issuer.sign({ claims: { sub: "user-1" } }))), "OK");
  t.is(
    await reason(oidc.verify(await issuer.sign({ claims: { sub: "alice@example.org" } }))),
    "OK",
  );
  const k8s = verifier(issuer, () => Date.now());
  const forged = await issuer.sign({
    name: "a",
    claims: { "kubernetes.io": { namespace: "kube-system", serviceaccount: { name: "a" } } },
  });
  t.is(await reason(k8s.verify(forged)), "INVALID_CLAIMS");
  t.is(
    await reason(k8s.verify(await issuer.sign({ name: "a", notBeforeIn: 300 }))),
    "TOKEN_NOT_YET_VALID",
  );
  t.is(
    await reason(k8s.verify(await issuer.sign({ name: "a", issuer: "https://elsewhere.example" }))),
    "UNTRUSTED_ISSUER",
  );
  const aged = verifier(issuer, () => Date.now(), { maxTokenAgeMs: 60_000 });
  t.is(
    await reason(aged.verify(await issuer.sign({ name: "a", issuedAgo: 120 }))),
    "TOKEN_EXPIRED",
  );
  t.is(await reason(k8s.verify("not.a.jwt")), "MALFORMED_CREDENTIALS");
});

test("an in-cluster issuer: the key set over HTTPS under the cluster's CA, fetched with the pod's own token, read from its file on each fetch", async (t) => {
  const { createTestCa } = await import("./support/certs.ts");
  const { readFile, writeFile } = await import("node:fs/promises");
  const ca = await createTestCa("cluster");
  const cert = await ca.issue("apiserver", "kube-apiserver", ["IP:127.0.0.1"], "server");
  const opts = { tls: { cert: cert.cert, key: cert.key }, bearer: "pod-token-1" };
  const issuer = await startJwksIssuer(opts);
  t.teardown(issuer.stop);
  const tokenFile = `${ca.dir}/token`;
  await writeFile(tokenFile, "pod-token-1\n");
  let now = Date.now();
  const make = (caPem: string | undefined) =>
    verifier(issuer, () => now, {
      jwksUri: issuer.jwksUri,
      tokenFile,
      ...(caPem !== undefined ? { caPem } : {}),
    });
  const v = make(await readFile(ca.caCert, "utf8"));
  t.is(await reason(v.verify(await issuer.sign({ name: "a" }))), "OK");
  // Not trusting the cluster's CA: nothing verifies.
  t.is(await reason(make(undefined).verify(await issuer.sign({ name: "a" }))), "JWKS_UNAVAILABLE");
  // The kubelet rotated the token: the next fetch reads the new one.
  opts.bearer = "pod-token-2";
  await writeFile(tokenFile, "pod-token-2\n");
  await issuer.rotate(true);
  now += 10_000;
  t.is(await reason(v.verify(await issuer.sign({ name: "b" }))), "OK");
  // A token the API server refuses: a new key cannot be fetched.
  await writeFile(tokenFile, "stale\n");
  await issuer.rotate(true);
  now += 10_000;
  t.is(await reason(v.verify(await issuer.sign({ name: "c" }))), "UNKNOWN_KEY");
});

test("the pod's token is sent only to the issuer's origin or the configured key set's, never to another origin a discovery document names", async (t) => {
  const { createTestCa } = await import("./support/certs.ts");
  const { readFile, writeFile } = await import("node:fs/promises");
  const https = await import("node:https");
  const { issuerFetch } = await import("../src/auth/issuer-fetch.ts");
  const ca = await createTestCa("origins");
  const cert = await ca.issue("keys", "keys-host", ["IP:127.0.0.1"], "server");
  const seen: (string | undefined)[] = [];
  const server = https.createServer(
    { cert: await readFile(cert.cert), key: await readFile(cert.key) },
    (req, res) => {
      seen.push(req.headers.authorization);
      res.setHeader("content-type", "application/json");
      res.end('{"keys":[]}');
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  const origin = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  const tokenFile = `${ca.dir}/token`;
  await writeFile(tokenFile, "pod-token\n");
  const caPem = await readFile(ca.caCert, "utf8");
  const get = (tokenOrigins: string[]) =>
    issuerFetch({ ca: caPem, tokenFile, tokenOrigins })(`${origin}/keys`, {
      signal: AbortSignal.timeout(5_000),
    });
  t.is((await get(["https://issuer.example"])).status, 200);
  t.is((await get([origin])).status, 200);
  t.deepEqual(seen, [undefined, "Bearer pod-token"]);
});
