// TLS and mTLS on both listeners, with certificates made by openssl at test
// time: a client certificate's SPIFFE id (or its subject) is the caller's
// identity; a certificate from another CA proves nothing; and certificate
// files replaced on disk are served to new connections without a restart.

import { X509Certificate } from "node:crypto";
import { copyFile, readFile } from "node:fs/promises";
import tls from "node:tls";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import test from "ava";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  GetTokenRequestSchema,
  GetTokenResponseSchema,
  TokenService,
} from "../gen/tokenvend/v1/token_service_pb.js";
import { createTestCa, type Issued, type TestCa } from "./support/certs.ts";
import { createGrpcJsClient } from "./support/grpc-client.ts";
import { type Stack, startStack } from "./support/stack.ts";

let ca: TestCa;
let server: Issued;
let spiffe: Issued;
let subjectOnly: Issued;
let stranger: Issued;
let s: Stack;
const tlsPaths = { cert: "", key: "" };

test.before(async () => {
  ca = await createTestCa();
  server = await ca.issue("server", "server-a", ["IP:127.0.0.1", "DNS:localhost"], "server");
  spiffe = await ca.issue(
    "spiffe",
    "workload",
    ["URI:spiffe://example.test/ns/apps/sa/client"],
    "client",
  );
  subjectOnly = await ca.issue("legacy", "legacy-client", [], "client");
  const other = await createTestCa("other");
  stranger = await other.issue(
    "stranger",
    "stranger",
    ["URI:spiffe://example.test/ns/apps/sa/client"],
    "client",
  );
  // Served from copies, so the reload test can replace them.
  tlsPaths.cert = `${ca.dir}/served.pem`;
  tlsPaths.key = `${ca.dir}/served.key`;
  await copyFile(server.cert, tlsPaths.cert);
  await copyFile(server.key, tlsPaths.key);
  s = await startStack({
    config: {
      tls: {
        certFile: tlsPaths.cert,
        keyFile: tlsPaths.key,
        clientCaFile: ca.caCert,
        reloadInterval: "100ms",
      },
      auth: { mtls: true },
      health: { listen: "127.0.0.1:0" },
      metrics: { prometheusListen: "127.0.0.1:0" },
      policy: {
        rules: [
          {
            name: "workloads",
            callers: ["spiffe://example.test/ns/apps/*", "CN=legacy-client"],
            allow: ["GetToken"],
            grants: ["demo"],
          },
        ],
      },
    },
  });
});
test.after.always(() => s?.stop());

const read = (p: string) => readFile(p);

async function viaGrpcJs(client: Issued | undefined): Promise<string> {
  const creds = grpc.credentials.createSsl(
    await read(ca.caCert),
    client !== undefined ? await read(client.key) : null,
    client !== undefined ? await read(client.cert) : null,
  );
  const g = createGrpcJsClient(TokenService, s.grpcAddress, {}, creds);
  try {
    const r = await g.unary(
      "GetToken",
      GetTokenRequestSchema,
      GetTokenResponseSchema,
    )({ $typeName: "tokenvend.v1.GetTokenRequest", grant: "demo", minValiditySeconds: 0 });
    return r.credential !== undefined ? "OK" : "no credential";
  } catch (err) {
    const e = err as grpc.ServiceError;
    return `${grpc.status[e.code]}`;
  } finally {
    g.close();
  }
}

async function viaConnect(client: Issued | undefined, httpVersion: "1.1" | "2"): Promise<string> {
  const nodeOptions = {
    ca: await read(ca.caCert),
    ...(client !== undefined ? { cert: await read(client.cert), key: await read(client.key) } : {}),
  };
  const transport =
    httpVersion === "1.1"
      ? createConnectTransport({
          baseUrl: `https://127.0.0.1:${s.server.httpPort}`,
          httpVersion,
          nodeOptions,
        })
      : createGrpcTransport({ baseUrl: `https://127.0.0.1:${s.server.httpPort}`, nodeOptions });
  try {
    await createClient(TokenService, transport).getToken({ grant: "demo" });
    return "OK";
  } catch (err) {
    const e = ConnectError.from(err);
    return `${Code[e.code]} ${e.findDetails(ErrorInfoSchema)[0]?.reason ?? ""}`.trim();
  }
}

test.serial(
  "a client certificate's SPIFFE id, or its subject, is the caller, on both listeners",
  async (t) => {
    t.is(await viaGrpcJs(spiffe), "OK");
    t.is(await viaGrpcJs(subjectOnly), "OK");
    for (const v of ["1.1", "2"] as const) {
      t.is(await viaConnect(spiffe, v), "OK", `HTTP/${v}`);
      t.is(await viaConnect(subjectOnly, v), "OK", `HTTP/${v}`);
    }
  },
);

test.serial(
  "no client certificate, or one from another CA: UNAUTHENTICATED on both listeners",
  async (t) => {
    t.is(await viaGrpcJs(undefined), "UNAUTHENTICATED");
    t.is(await viaGrpcJs(stranger), "UNAUTHENTICATED");
    for (const v of ["1.1", "2"] as const) {
      t.is(await viaConnect(undefined, v), "Unauthenticated MISSING_CREDENTIALS", `HTTP/${v}`);
      t.is(await viaConnect(stranger, v), "Unauthenticated MISSING_CREDENTIALS", `HTTP/${v}`);
    }
  },
);

test.serial(
  "a SPIFFE id that is not a valid one (here with a comma, which the certificate text quotes) names no one: UNAUTHENTICATED, not its subject",
  async (t) => {
    const odd = await ca.issue(
      "odd-spiffe",
      "legacy-client",
      [
        "URI:spiffe://example.test/ns/other/sa/a,b",
        "DNS:x, URI:spiffe://example.test/ns/apps/sa/x",
      ],
      "client",
    );
    t.is(await viaGrpcJs(odd), "UNAUTHENTICATED");
    for (const v of ["1.1", "2"] as const) {
      t.regex(await viaConnect(odd, v), /^Unauthenticated/, `HTTP/${v}`);
    }
  },
);

test.serial("plaintext is not served on a TLS listener", async (t) => {
  const g = createGrpcJsClient(TokenService, s.grpcAddress, {}, grpc.credentials.createInsecure(), {
    "grpc.max_reconnect_backoff_ms": 100,
  });
  const err = await t.throwsAsync(
    g.unary(
      "GetToken",
      GetTokenRequestSchema,
      GetTokenResponseSchema,
    )(
      { $typeName: "tokenvend.v1.GetTokenRequest", grant: "demo", minValiditySeconds: 0 },
      { deadlineMs: 2000 },
    ),
  );
  g.close();
  t.true(
    [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED].includes(
      (err as grpc.ServiceError).code,
    ),
  );
});

/** The CN of the certificate a listener presents to a new connection. */
function servedCn(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      { host: "127.0.0.1", port, rejectUnauthorized: false, ALPNProtocols: ["h2"] },
      () => {
        const cn = socket.getPeerCertificate().subject?.CN;
        socket.destroy();
        resolve(String(cn));
      },
    );
    socket.once("error", reject);
  });
}

/** The served certificate's expiry as the Prometheus endpoint shows it, in seconds. */
async function expiryGauge(): Promise<number> {
  const scrape = await (await fetch(`http://127.0.0.1:${s.server.prometheusPort}/metrics`)).text();
  const line = scrape.split("\n").find((l) => l.startsWith("tokenvend_tls_certificate_expiry"));
  return Number(line?.split(" ").at(-1));
}

const notAfterOf = async (file: string) =>
  Math.floor(Date.parse(new X509Certificate(await readFile(file)).validTo) / 1000);

test.serial(
  "certificate files replaced on disk are served to new connections, without a restart, on both listeners; the expiry gauge follows",
  async (t) => {
    t.is(await servedCn(s.server.grpcPort), "server-a");
    t.is(await servedCn(s.server.httpPort), "server-a");
    t.is(await expiryGauge(), await notAfterOf(server.cert));
    const next = await ca.issue(
      "server-b",
      "server-b",
      ["IP:127.0.0.1", "DNS:localhost"],
      "server",
    );
    await copyFile(next.key, tlsPaths.key);
    await copyFile(next.cert, tlsPaths.cert);
    const deadline = Date.now() + 10_000;
    let got = ["", ""];
    while (Date.now() < deadline) {
      got = [await servedCn(s.server.grpcPort), await servedCn(s.server.httpPort)];
      if (got[0] === "server-b" && got[1] === "server-b") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.deepEqual(got, ["server-b", "server-b"]);
    t.is(await expiryGauge(), await notAfterOf(next.cert), "the expiry gauge follows the reload");
    t.is(await viaGrpcJs(spiffe), "OK");
    t.is(await viaConnect(spiffe, "1.1"), "OK");
  },
);

test.serial(
  "the plaintext health listener answers Kubernetes-style probes while the gRPC listener speaks TLS only",
  async (t) => {
    const { execFile } = await import("node:child_process");
    const { promisify } = await import("node:util");
    const { toolPath } = await import("./support/tools.ts");
    const healthProto = new URL(
      "../node_modules/grpc-health-check/proto/health/v1",
      import.meta.url,
    ).pathname;
    const check = (port: number, service: string) =>
      promisify(execFile)(toolPath("grpcurl"), [
        "-plaintext",
        "-import-path",
        healthProto,
        "-proto",
        "health.proto",
        "-d",
        JSON.stringify({ service }),
        `127.0.0.1:${port}`,
        "grpc.health.v1.Health/Check",
      ]);
    for (const service of ["", "tokenvend.v1.TokenService"]) {
      t.deepEqual(JSON.parse((await check(s.server.healthPort ?? 0, service)).stdout), {
        status: "SERVING",
      });
    }
    // Nothing but health there.
    const other = await t.throwsAsync(
      promisify(execFile)(toolPath("grpcurl"), [
        "-plaintext",
        `127.0.0.1:${s.server.healthPort}`,
        "list",
      ]),
    );
    t.regex(
      (other as unknown as { stderr: string }).stderr,
      /Unimplemented|does not support the reflection API/,
    );
  },
);
