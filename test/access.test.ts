// What the policy and the audit stream do around the calls that pass
// authentication: WatchToken rechecks its binding on every message, a session
// JWT names a session and binds its client, and the audit stream has one
// record per decision and operation, field by field, with no token material;
// with failClosed, a call whose record cannot be written is refused.

import { createHmac } from "node:crypto";
import { readFile } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import test from "ava";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { TokenService, WatchTokenRequestSchema } from "../gen/tokenvend/v1/token_service_pb.js";
import { startAuthStack } from "./support/auth-stack.ts";
import { startJwksIssuer } from "./support/jwks-issuer.ts";

const failure = (err: unknown) => {
  const e = ConnectError.from(err);
  return { code: e.code, reason: e.findDetails(ErrorInfoSchema)[0]?.reason };
};

const transports = (grpcAddress: string, httpUrl: string): Record<string, Transport> => ({
  "gRPC listener": createGrpcTransport({ baseUrl: `http://${grpcAddress}` }),
  "HTTP listener": createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1" }),
});

test("a WatchToken stream ends PERMISSION_DENIED / INVALID_BINDING when a later login on its session is for another subject", async (t) => {
  const s = await startAuthStack();
  t.teardown(s.stop);
  const headers = { authorization: await s.bearer("apps", "alice") };
  for (const [listener, transport] of Object.entries(transports(s.grpcAddress, s.httpUrl))) {
    const session = `s-watch-${listener.length}`;
    await s.store(session, await s.mint("alice"), 300, { subject: "alice" });
    const c = createClient(TokenService, transport);
    const req = create(WatchTokenRequestSchema, {
      target: {
        case: "session",
        value: { sessionId: session, provider: "idp", expectedSubject: "alice" },
      },
    });
    const got: string[] = [];
    const ended = (async () => {
      for await (const m of c.watchToken(req, { headers })) {
        got.push(m.credential?.accessToken ?? "");
        if (got.length === 1) {
          await s.store(session, { ...(await s.mint("alice")), accessToken: "same-subject" }, 300, {
            subject: "alice",
          });
        }
        if (got.length === 2) {
          await s.store(
            session,
            { ...(await s.mint("mallory")), accessToken: "other-subject" },
            300,
            { subject: "mallory" },
          );
        }
      }
    })();
    const err = await t.throwsAsync(ended);
    t.deepEqual(failure(err), { code: Code.PermissionDenied, reason: "INVALID_BINDING" }, listener);
    t.is(got[1], "same-subject", listener);
    t.false(got.includes("other-subject"), listener);
  }
});

test("a session JWT names the session by tsid and binds its client_id; a gateway rule needs one to reach another owner's session", async (t) => {
  const sessions = await startJwksIssuer();
  t.teardown(sessions.stop);
  const s = await startAuthStack({
    auth: {
      sessionJwt: { issuers: [{ issuer: sessions.issuer, audiences: ["tokenvend-sessions"] }] },
    },
  });
  t.teardown(s.stop);
  await s.store("s-jwt", await s.mint("alice"), 300, { clientId: "web-app" });
  const jwt = (claims: Record<string, unknown>) =>
    sessions.sign({ audience: "tokenvend-sessions", claims: { sub: "user-alice", ...claims } });
  const gateway = { authorization: await s.bearer("gateway", "edge") };
  for (const [listener, transport] of Object.entries(transports(s.grpcAddress, s.httpUrl))) {
    const c = createClient(TokenService, transport);
    const call = async (headers: Record<string, string>, sessionId = "") => {
      try {
        const r = await c.getValidTokens({ sessionId, provider: "idp" }, { headers });
        return r.credential?.generation === 1n ? "OK" : "wrong generation";
      } catch (err) {
        return failure(err);
      }
    };
    const ok = await jwt({ tsid: "s-jwt", client_id: "web-app" });
    t.is(await call({ ...gateway, "tokenvend-session-jwt": ok }), "OK", listener);
    t.deepEqual(
      await call(gateway, "s-jwt"),
      { code: Code.PermissionDenied, reason: "SESSION_TOKEN_REQUIRED" },
      listener,
    );
    t.deepEqual(
      await call({
        ...gateway,
        "tokenvend-session-jwt": await jwt({ tsid: "s-jwt", client_id: "other-app" }),
      }),
      { code: Code.PermissionDenied, reason: "INVALID_BINDING" },
      listener,
    );
    t.deepEqual(
      await call({ ...gateway, "tokenvend-session-jwt": ok }, "s-other"),
      { code: Code.PermissionDenied, reason: "INVALID_SESSION_TOKEN" },
      listener,
    );
    const forged = await sessions.sign({
      audience: "tokenvend-sessions",
      foreignKey: true,
      kid: sessions.kids[0] as string,
      claims: { sub: "u", tsid: "s-jwt", client_id: "web-app" },
    });
    t.deepEqual(
      await call({ ...gateway, "tokenvend-session-jwt": forged }),
      { code: Code.PermissionDenied, reason: "INVALID_SESSION_TOKEN" },
      listener,
    );
    // The owner may still read its own session the plain way.
    t.is(await call({ authorization: await s.bearer("apps", "alice") }, "s-jwt"), "OK", listener);
  }
});

test("with a session JWT every method that names a session uses its tsid: another session id or client id is INVALID_SESSION_TOKEN, on both listeners", async (t) => {
  const sessions = await startJwksIssuer();
  t.teardown(sessions.stop);
  const gatewayRule = {
    name: "gateway-all",
    callers: ["system:serviceaccount:gateway:*"],
    allow: [
      "StoreUpstreamTokens",
      "GetValidTokens",
      "WatchToken",
      "StartAuthorization",
      "StartDeviceAuthorization",
      "ExchangeToken",
    ],
    providers: ["idp"],
    sessions: "token",
  };
  const s = await startAuthStack({
    auth: {
      sessionJwt: { issuers: [{ issuer: sessions.issuer, audiences: ["tokenvend-sessions"] }] },
    },
    config: { policy: { rules: [gatewayRule] } },
  });
  t.teardown(s.stop);
  const jwt = await sessions.sign({
    audience: "tokenvend-sessions",
    claims: { sub: "user-alice", tsid: "s-tsid", client_id: "web-app" },
  });
  const headers = {
    authorization: await s.bearer("gateway", "edge"),
    "tokenvend-session-jwt": jwt,
  };
  const other = { sessionId: "s-other", provider: "idp" };
  const refusal = { code: Code.PermissionDenied, reason: "INVALID_SESSION_TOKEN" };
  let generation = 0n;
  for (const [listener, transport] of Object.entries(transports(s.grpcAddress, s.httpUrl))) {
    const c = createClient(TokenService, transport);
    const minted = await s.mint("alice");
    const tokens = {
      provider: "idp",
      accessToken: minted.accessToken,
      refreshToken: minted.refreshToken,
      expiry: { case: "expiresIn" as const, value: 300n },
    };
    const refused = async (call: () => Promise<unknown>, what: string) =>
      t.deepEqual(await call().then(() => "OK", failure), refusal, `${listener}: ${what}`);
    await refused(
      () => c.storeUpstreamTokens({ ...tokens, sessionId: "s-other" }, { headers }),
      "store",
    );
    await refused(
      () => c.storeUpstreamTokens({ ...tokens, clientId: "other-app" }, { headers }),
      "store for another client",
    );
    await refused(
      () => c.startAuthorization({ ...other, redirectUri: "http://127.0.0.1/cb" }, { headers }),
      "StartAuthorization",
    );
    await refused(() => c.startDeviceAuthorization(other, { headers }), "StartDeviceAuthorization");
    const exchange = { subject: { case: "session" as const, value: other }, audience: "api" };
    await refused(() => c.exchangeToken({ target: exchange }, { headers }), "ExchangeToken");
    await refused(async () => {
      const req = { target: { case: "exchange" as const, value: exchange } };
      for await (const _ of c.watchToken(req, { headers })) break;
    }, "WatchToken of an exchange");
    // Without a session id, the store goes to the tsid's session, bound to its client.
    const stored = await c.storeUpstreamTokens(tokens, { headers });
    t.is(stored.generation, ++generation, listener);
    const read = await c.getValidTokens({ provider: "idp" }, { headers });
    t.is(read.credential?.accessToken, minted.accessToken, listener);
  }
});

test("a session JWT whose issuer's keys cannot be fetched is UNAVAILABLE / JWKS_UNAVAILABLE (retry), not a bad token", async (t) => {
  const sessions = await startJwksIssuer();
  const s = await startAuthStack({
    auth: {
      sessionJwt: { issuers: [{ issuer: sessions.issuer, audiences: ["tokenvend-sessions"] }] },
    },
  });
  t.teardown(s.stop);
  const jwt = await sessions.sign({
    audience: "tokenvend-sessions",
    claims: { sub: "user-alice", tsid: "s-jwt", client_id: "web-app" },
  });
  await sessions.stop();
  const headers = {
    authorization: await s.bearer("gateway", "edge"),
    "tokenvend-session-jwt": jwt,
  };
  for (const [listener, transport] of Object.entries(transports(s.grpcAddress, s.httpUrl))) {
    const c = createClient(TokenService, transport);
    const got = await c.getValidTokens({ provider: "idp" }, { headers }).then(() => "OK", failure);
    t.deepEqual(got, { code: Code.Unavailable, reason: "JWKS_UNAVAILABLE" }, listener);
  }
});

test("the audit stream: one record per allow, deny and error, field by field, session ids HMAC'd, no token material anywhere", async (t) => {
  const s = await startAuthStack();
  t.teardown(s.stop);
  const minted = await s.mint("alice");
  await s.store("s-audit", minted, 300);
  const c = createClient(TokenService, createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }));
  const alice = { authorization: await s.bearer("apps", "alice") };
  const reader = { authorization: await s.bearer("readers", "limited") };
  await c.getValidTokens({ sessionId: "s-audit", provider: "idp" }, { headers: alice });
  await t.throwsAsync(
    c.getValidTokens({ sessionId: "s-audit", provider: "idp" }, { headers: reader }),
  );
  await t.throwsAsync(
    c.getValidTokens({ sessionId: "s-nobody", provider: "idp" }, { headers: alice }),
  );
  await t.throwsAsync(c.getValidTokens({ sessionId: "s-audit", provider: "idp" }));
  const grant = await c.getToken(
    { grant: "demo" },
    { headers: { authorization: `Bearer ${s.apiKey}` } },
  );
  await c.revokeSession(
    { sessionId: "s-audit", provider: "idp", revokeUpstream: true },
    { headers: alice },
  );

  const all = await s.auditRecords();
  t.deepEqual(all[0], {
    ...all[0],
    event: "config",
    outcome: "OK",
    details: { auth: true, rules: 6 },
  });
  const records = all.filter(
    (r) => r.event === "call" || r.event === "refresh" || r.event === "revocation",
  );
  const hmac = (id: string) => createHmac("sha256", s.auditKey).update(id).digest("hex");
  const strip = ({ time, peer, ...r }: Record<string, unknown>) => {
    t.regex(String(time), /^\d{4}-\d\d-\d\dT/);
    if (peer !== undefined) t.regex(String(peer), /^127\.0\.0\.1:\d+$/);
    return r;
  };
  const rpc = "tokenvend.v1.TokenService/GetValidTokens";
  const call = (r: Record<string, unknown>) => ({
    audit: true,
    event: "call",
    rpc,
    provider: "idp",
    ...r,
  });
  const alices = { caller: "system:serviceaccount:apps:alice", authMethod: "jwt" };
  // With failClosed, a write is recorded as it starts, then with its outcome.
  t.deepEqual(
    records.slice(0, 2).map((r) => [r.rpc, r.outcome, r.generation]),
    [
      ["tokenvend.v1.TokenService/StoreUpstreamTokens", "STARTED", undefined],
      ["tokenvend.v1.TokenService/StoreUpstreamTokens", "OK", 1],
    ],
  );
  t.deepEqual(records.map(strip).slice(2, 6), [
    call({
      ...alices,
      session: hmac("s-audit"),
      decision: "allow",
      rule: "apps",
      outcome: "OK",
      generation: 1,
    }),
    call({
      caller: "system:serviceaccount:readers:limited",
      authMethod: "jwt",
      session: hmac("s-audit"),
      decision: "deny",
      reason: "METHOD_NOT_ALLOWED",
      rule: "readers",
      outcome: "PERMISSION_DENIED",
    }),
    call({
      ...alices,
      session: hmac("s-nobody"),
      decision: "allow",
      rule: "apps",
      outcome: "NOT_FOUND",
      reason: "SESSION_NOT_FOUND",
    }),
    {
      audit: true,
      event: "call",
      rpc,
      decision: "deny",
      reason: "MISSING_CREDENTIALS",
      outcome: "UNAUTHENTICATED",
    },
  ]);
  const rest = records.slice(6).map(strip);
  t.deepEqual(
    rest.find((r) => r.event === "refresh"),
    {
      audit: true,
      event: "refresh",
      provider: "idp",
      outcome: "OK",
      details: { grantType: "client_credentials" },
    },
  );
  t.deepEqual(
    rest.find((r) => r.rpc === "tokenvend.v1.TokenService/GetToken"),
    {
      audit: true,
      event: "call",
      caller: "api-key:ci",
      authMethod: "api-key",
      rpc: "tokenvend.v1.TokenService/GetToken",
      grant: "demo",
      decision: "allow",
      rule: "apps",
      outcome: "OK",
      generation: 1,
    },
  );
  t.deepEqual(
    rest.find((r) => r.event === "revocation"),
    {
      audit: true,
      event: "revocation",
      provider: "idp",
      outcome: "OK",
      details: { grantType: "refresh_token" },
    },
  );

  const text = await readFile(s.auditFile, "utf8");
  const secrets = [
    minted.accessToken,
    minted.refreshToken,
    minted.idToken,
    grant.credential?.accessToken,
    s.apiKey,
    alice.authorization.slice(7),
    "s-audit",
    "s-nobody",
  ];
  for (const secret of secrets) {
    if (secret) t.false(text.includes(secret), `the audit stream holds ${secret.slice(0, 12)}…`);
  }
});

test("failClosed: a call whose audit record cannot be written is refused UNAVAILABLE (AUDIT_UNAVAILABLE), a write before it changes anything; without it, it is served", async (t) => {
  for (const failClosed of [true, false]) {
    const s = await startAuthStack({ audit: { file: "/dev/full", failClosed } });
    t.teardown(s.stop);
    const c = createClient(
      TokenService,
      createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }),
    );
    const headers = { authorization: await s.bearer("apps", "alice") };
    let got: unknown = "OK";
    try {
      await c.getToken({ grant: "demo" }, { headers });
    } catch (err) {
      got = failure(err);
    }
    t.deepEqual(
      got,
      failClosed ? { code: Code.Unavailable, reason: "AUDIT_UNAVAILABLE" } : "OK",
      `failClosed ${failClosed}`,
    );
    // A write is refused before it happens: nothing stored that the audit does not show.
    const expiry = { case: "expiresIn" as const, value: 300n };
    const stored = await c
      .storeUpstreamTokens(
        { sessionId: "s-unaudited", provider: "idp", accessToken: "at", expiry },
        { headers },
      )
      .then(() => "OK", failure);
    t.deepEqual(stored, got, `store, failClosed ${failClosed}`);
    const held = await s.server.store.getSession("s-unaudited");
    t.is(held.length, failClosed ? 0 : 1, `stored, failClosed ${failClosed}`);
  }
});

test("a rule with sessions: any reads other owners' sessions, only of its providers; a tenant's sessions are every tenant member's", async (t) => {
  const s = await startAuthStack();
  t.teardown(s.stop);
  await s.store("s-shared", await s.mint("alice"), 300);
  // Expired at idp2: serving it would refresh it there.
  await s.store("s-shared", await s.mint("alice"), 1, { provider: "idp2" });
  const c = createClient(TokenService, createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }));
  const as = async (ns: string, name: string) => ({ authorization: await s.bearer(ns, name) });
  const ops = await as("ops", "oncall");
  t.is(
    (await c.getValidTokens({ sessionId: "s-shared", provider: "idp" }, { headers: ops }))
      .credential?.generation,
    1n,
  );
  const refreshesBefore = s.idp.counters.tokenRequests.refresh_token ?? 0;
  const all = await c.getAllUpstreamCredentials({ sessionId: "s-shared" }, { headers: ops });
  t.deepEqual(Object.keys(all.credentials), ["idp"], "idp2 is beyond the ops rule");
  t.deepEqual(all.failures, [], "nor reported as failing");
  t.is(
    s.idp.counters.tokenRequests.refresh_token ?? 0,
    refreshesBefore,
    "a provider beyond the rule is not refreshed for it",
  );
  const denied = await t.throwsAsync(
    c.getValidTokens({ sessionId: "s-shared", provider: "idp2" }, { headers: ops }),
  );
  t.deepEqual(failure(denied), { code: Code.PermissionDenied, reason: "PROVIDER_NOT_ALLOWED" });

  const expiry = { case: "expiresIn" as const, value: 300n };
  await c.storeUpstreamTokens(
    { sessionId: "s-web", provider: "idp", accessToken: "web-at", expiry },
    { headers: await as("web", "login") },
  );
  t.is(
    (
      await c.getValidTokens(
        { sessionId: "s-web", provider: "idp" },
        { headers: await as("web", "reader") },
      )
    ).credential?.accessToken,
    "web-at",
  );
  const alice = await t.throwsAsync(
    c.getValidTokens(
      { sessionId: "s-web", provider: "idp" },
      { headers: await as("apps", "alice") },
    ),
  );
  t.deepEqual(failure(alice), { code: Code.PermissionDenied, reason: "NOT_OWNER" });
});

test("a WatchToken stream ends UNAUTHENTICATED (TOKEN_EXPIRED) when the credential that opened it expires", async (t) => {
  const s = await startAuthStack();
  t.teardown(s.stop);
  const c = createClient(TokenService, createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }));
  // The grant's token is fetched first, so the stream's first message does not wait on the IdP.
  await c.getToken(
    { grant: "demo" },
    { headers: { authorization: await s.bearer("apps", "alice") } },
  );
  const short = `Bearer ${await s.issuer.sign({ name: "alice", expiresIn: 3 })}`;
  const started = Date.now();
  const req = create(WatchTokenRequestSchema, { target: { case: "grant", value: "demo" } });
  let messages = 0;
  const err = await t.throwsAsync(
    (async () => {
      for await (const _ of c.watchToken(req, { headers: { authorization: short } })) messages++;
    })(),
  );
  t.deepEqual(failure(err), { code: Code.Unauthenticated, reason: "TOKEN_EXPIRED" });
  t.is(messages, 1);
  t.true(Date.now() - started >= 1000, "not before the credential's exp");
});
