import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { GSSAPI_NOT_BUILT, gssapiAvailable } from "../../src/auth/gssapi-native.js";
import { requireTool } from "./tools.js";

export const REALM = "FERRY.TEST";

export interface TestRealm {
  dir: string;
  realm: string;
  port: number;
  /** The keytab holding rcmd/localhost. */
  keytab: string;
  user: string;
  password: string;
  /** A credential cache with the user's ticket (after kinit). */
  ccache: string;
  /** A credential cache that holds nothing: a client without a ticket. */
  emptyCcache: string;
  /** Environment for child processes (curl, kinit). Also applied to this process. */
  env: NodeJS.ProcessEnv;
  /** A principal the KDC knows but the keytab does not: a wrong service. */
  otherService: string;
  stop(): Promise<void>;
}

/** Finds a port free for both TCP and UDP on 127.0.0.1 (the KDC listens on both). */
async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    const port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const udp = dgram.createSocket("udp4");
    const ok = await new Promise<boolean>((resolve) => {
      udp.once("error", () => resolve(false));
      udp.bind(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((r) => udp.close(() => r()));
    if (ok) return port;
  }
  throw new Error("no free port for the test KDC after 20 attempts");
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, input?: string): string {
  const r = spawnSync(cmd, args, { env, input, encoding: "utf8", timeout: 20_000 });
  if (r.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${r.status ?? r.error?.message}): ${r.stderr}${r.stdout}`,
    );
  }
  return r.stdout;
}

async function waitForPort(port: number, kdc: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (kdc.exitCode !== null) throw new Error(`krb5kdc exited with ${kdc.exitCode}: ${log()}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`krb5kdc did not listen on 127.0.0.1:${port} within 10 s: ${log()}`);
}

export interface TestRealmOptions {
  /**
   * Kerberos enctype names (e.g. "aes128-cts-hmac-sha256-128") the realm's keys, tickets and
   * session keys are limited to; omitted, MIT's defaults.
   */
  enctypes?: string[];
}

/**
 * A throwaway MIT Kerberos realm in a temp folder: a database with a random master password,
 * a user and the service rcmd/localhost (in a keytab), a KDC on 127.0.0.1 at a free port, and
 * the user's ticket obtained with kinit. KRB5_CONFIG, KRB5_KDC_PROFILE, KRB5CCNAME and
 * KRB5RCACHEDIR are set in process.env too: libkrb5 reads them each time it makes a context,
 * so the in-process add-on sees this realm. `stop()` kills the KDC by PID and removes the folder.
 */
export async function startTestRealm(options: TestRealmOptions = {}): Promise<TestRealm> {
  const dir = mkdtempSync(join(tmpdir(), "ferry-kdc-"));
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KRB5_CONFIG: join(dir, "krb5.conf"),
    KRB5_KDC_PROFILE: join(dir, "kdc.conf"),
    KRB5CCNAME: `FILE:${join(dir, "ccache")}`,
    KRB5RCACHEDIR: dir,
  };
  env.KRB5_KTNAME = undefined;
  env.KRB5_CLIENT_KTNAME = undefined;
  // Limited enctypes: every key in the database (master, krbtgt, user, service) has only
  // these, and clients (and the KDC, which reads krb5.conf too) permit only these, so the
  // service ticket's session key and the acceptor's subkey are one of them.
  const only = options.enctypes?.join(" ");
  const libdefaults = only
    ? `  permitted_enctypes = ${only}\n  default_tgs_enctypes = ${only}\n  default_tkt_enctypes = ${only}\n`
    : "";
  const realmEnctypes = only
    ? `    supported_enctypes = ${options.enctypes!.map((e) => `${e}:normal`).join(" ")}\n    master_key_type = ${options.enctypes![0]}\n`
    : "";
  writeFileSync(
    env.KRB5_CONFIG!,
    `[libdefaults]
${libdefaults}  default_realm = ${REALM}
  dns_lookup_realm = false
  dns_lookup_kdc = false
  dns_canonicalize_hostname = false
  rdns = false
  udp_preference_limit = 1
[realms]
  ${REALM} = {
    kdc = 127.0.0.1:${port}
  }
[domain_realm]
  localhost = ${REALM}
`,
  );
  writeFileSync(
    env.KRB5_KDC_PROFILE!,
    `[kdcdefaults]
  kdc_listen = 127.0.0.1:${port}
  kdc_tcp_listen = 127.0.0.1:${port}
[realms]
  ${REALM} = {
    database_name = ${join(dir, "principal")}
    key_stash_file = ${join(dir, "stash")}
    acl_file = ${join(dir, "kadm5.acl")}
    max_life = 1h
${realmEnctypes}  }
[logging]
  kdc = FILE:${join(dir, "kdc.log")}
`,
  );
  writeFileSync(join(dir, "kadm5.acl"), "");
  const master = randomBytes(18).toString("base64url");
  const user = "alice";
  const password = randomBytes(12).toString("base64url");
  const keytab = join(dir, "ferry.keytab");
  const otherService = "host/localhost";
  let kdc: ChildProcess | undefined;
  try {
    run("kdb5_util", ["create", "-s", "-r", REALM, "-P", master], env);
    const admin = (q: string): string => run("kadmin.local", ["-r", REALM, "-q", q], env);
    admin(`addprinc -pw ${password} ${user}`);
    admin("addprinc -randkey rcmd/localhost");
    admin(`addprinc -randkey ${otherService}`);
    admin(`ktadd -k ${keytab} rcmd/localhost`);
    kdc = spawn("krb5kdc", ["-n", "-r", REALM], { env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    kdc.stderr?.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    await waitForPort(port, kdc, () => stderr);
    // kinit reads the password from stdin when stdin is not a terminal.
    run("kinit", [user], env, `${password}\n`);
  } catch (err) {
    kdc?.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const saved: Record<string, string | undefined> = {};
  for (const k of ["KRB5_CONFIG", "KRB5_KDC_PROFILE", "KRB5CCNAME", "KRB5RCACHEDIR", "KRB5_KTNAME"]) {
    saved[k] = process.env[k];
    if (env[k] === undefined) delete process.env[k];
    else process.env[k] = env[k];
  }
  const proc = kdc;
  return {
    dir,
    realm: REALM,
    port,
    keytab,
    user,
    password,
    ccache: env.KRB5CCNAME!,
    emptyCcache: `FILE:${join(dir, "empty-ccache")}`,
    env,
    otherService,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise<void>((r) => proc.once("exit", () => r()));
        proc.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
        if (proc.exitCode === null) proc.kill("SIGKILL");
      }
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The MIT Kerberos tools startTestRealm runs and the GSS-API add-on. Outside CI anything missing
 * skips `t` with what to install; under CI=true it fails.
 */
export function requireKerberos(t: TestContext): boolean {
  for (const [cmd, pkg] of [
    ["krb5kdc", "krb5-kdc"],
    ["kdb5_util", "krb5-kdc"],
    ["kadmin.local", "krb5-admin-server"],
    ["kinit", "krb5-user"],
  ] as const) {
    if (!requireTool(t, cmd, pkg)) return false;
  }
  if (gssapiAvailable()) return true;
  if (process.env.CI === "true") throw new Error(GSSAPI_NOT_BUILT);
  t.skip(GSSAPI_NOT_BUILT);
  return false;
}
