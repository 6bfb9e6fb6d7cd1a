// Certificates made at test time with openssl: a CA, server certificates for
// 127.0.0.1 and localhost, and client certificates with a SPIFFE id (a URI
// SAN) or only a subject; a second, unrelated CA for certificates nobody trusts.

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface Issued {
  readonly cert: string;
  readonly key: string;
}

export interface TestCa {
  readonly dir: string;
  readonly caCert: string;
  /** A certificate signed by this CA: subject CN, and SANs (e.g. "URI:spiffe://…", "IP:127.0.0.1"). */
  issue(name: string, cn: string, sans: string[], usage: "server" | "client"): Promise<Issued>;
}

let issued = 0;

export async function createTestCa(name = "ca"): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), `tokenvend-${name}-`));
  const caKey = join(dir, "ca.key");
  const caCert = join(dir, "ca.pem");
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    caKey,
    "-out",
    caCert,
    "-days",
    "2",
    "-subj",
    `/CN=tokenvend test ${name}`,
  ]);
  return {
    dir,
    caCert,
    async issue(name, cn, sans, usage) {
      // Unique per call: tests issue concurrently.
      const file = `${name}-${++issued}`;
      const key = join(dir, `${file}.key`);
      const csr = join(dir, `${file}.csr`);
      const cert = join(dir, `${file}.pem`);
      const ext = join(dir, `${file}.ext`);
      await writeFile(
        ext,
        [
          "basicConstraints=CA:FALSE",
          `extendedKeyUsage=${usage === "server" ? "serverAuth" : "clientAuth"}`,
          // A section, so a name may hold a comma ("URI:spiffe://td/a,b").
          ...(sans.length > 0
            ? [
                "subjectAltName=@alt",
                "[alt]",
                ...sans.map(
                  (san, i) =>
                    `${san.slice(0, san.indexOf(":"))}.${i}=${san.slice(san.indexOf(":") + 1)}`,
                ),
              ]
            : []),
        ].join("\n"),
      );
      await run("openssl", [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        `/CN=${cn}`,
      ]);
      await run("openssl", [
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        caCert,
        "-CAkey",
        caKey,
        "-set_serial",
        `0x${randomBytes(8).toString("hex")}`,
        "-out",
        cert,
        "-days",
        "1",
        "-extfile",
        ext,
      ]);
      return { cert, key };
    },
  };
}
