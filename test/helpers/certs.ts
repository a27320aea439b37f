import { X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { run, tempDir } from "./process.js";

/** PEM files on disk, as a configuration names them. */
export interface CertFiles {
  cert: string;
  key: string;
}

/**
 * A tiny certificate authority for tests, made with `openssl` in a temporary directory: one CA,
 * and certificates it issues (1 day) for servers (localhost, 127.0.0.1) and clients (by CN).
 */
export interface TestPki {
  dir: string;
  /** The CA's certificate and key. */
  ca: CertFiles;
  /** Issues a certificate with subject CN=`cn` into `<name>.pem` / `<name>.key`. */
  issue(name: string, cn?: string): Promise<CertFiles>;
  /** A self-signed certificate (no CA), for "wrong certificate" cases. */
  selfSigned(name: string, cn?: string): Promise<CertFiles>;
  /** SHA-256 fingerprint of a certificate file, as Node writes it (AB:CD:...). */
  fingerprint(certFile: string): Promise<string>;
  remove(): Promise<void>;
}

async function openssl(args: string[]): Promise<void> {
  const r = await run("openssl", args, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
const NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1";

export async function makePki(): Promise<TestPki> {
  const dir = await tempDir("ferry-pki-");
  const at = (f: string): string => join(dir.path, f);
  const ca = { cert: at("ca.pem"), key: at("ca.key") };
  await openssl([
    "req",
    "-x509",
    ...EC,
    "-days",
    "1",
    "-subj",
    "/CN=Ferry Test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-keyout",
    ca.key,
    "-out",
    ca.cert,
  ]);
  const extFile = at("leaf.ext");
  await writeFile(extFile, `${NAMES}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  let serial = 1;
  return {
    dir: dir.path,
    ca,
    async issue(name, cn = name) {
      const files = { cert: at(`${name}.pem`), key: at(`${name}.key`) };
      const csr = at(`${name}.csr`);
      await openssl(["req", "-new", ...EC, "-subj", `/CN=${cn}`, "-keyout", files.key, "-out", csr]);
      await openssl([
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca.cert,
        "-CAkey",
        ca.key,
        "-set_serial",
        String(serial++),
        "-days",
        "1",
        "-extfile",
        extFile,
        "-out",
        files.cert,
      ]);
      return files;
    },
    async selfSigned(name, cn = "localhost") {
      const files = { cert: at(`${name}.pem`), key: at(`${name}.key`) };
      await openssl([
        "req",
        "-x509",
        ...EC,
        "-days",
        "1",
        "-subj",
        `/CN=${cn}`,
        "-addext",
        NAMES,
        "-keyout",
        files.key,
        "-out",
        files.cert,
      ]);
      return files;
    },
    async fingerprint(certFile) {
      return new X509Certificate(await readFile(certFile)).fingerprint256;
    },
    remove: dir.remove,
  };
}
