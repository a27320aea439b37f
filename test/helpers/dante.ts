import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Daemon, run, startDaemon, tempDir } from "./process.js";

export const DANTED = "/usr/sbin/danted";

export interface DanteOptions {
  /**
   * Require SOCKS5 username/password. Dante checks these against the system's accounts
   * (`socksmethod: username`), so a throwaway account is created for the server's lifetime and
   * deleted by stop(); that needs root (see requireRoot). Names and passwords default to random.
   */
  auth?: { user?: string; password?: string };
  /** Listen address: 127.0.0.1 (default) or ::1. */
  host?: string;
  /** Dante's `external:` (address or interface outbound connections use); default `lo`. */
  external?: string;
  /** Commands allowed; default connect, bind, udpassociate and their replies. */
  commands?: string[];
  /** Lines appended to the generated danted.conf. */
  extraConfig?: string;
  lifetimeSec?: number;
  /** The server binary; default Debian's danted (see dante-gssapi.ts for one built with GSSAPI). */
  command?: string;
  /** The daemon's environment (a test realm's KRB5_CONFIG, say); default this process's. */
  env?: NodeJS.ProcessEnv;
  /** RFC 1961 (`socksmethod: gssapi`) with this service key, at these levels (Dante's names). */
  gssapi?: { keytab: string; service: string; enctype: DanteEnctype[] };
  /** Targets the socks rule passes, e.g. 127.0.0.0/8; default 0/0. */
  to?: string;
}

/** Dante's names for the RFC 1961 protection levels (`clear` is level 0, Ferry's "none"). */
export type DanteEnctype = "clear" | "integrity" | "confidentiality";

export interface RunningDante extends Daemon {
  /** socks5h://[user:password@]host:port */
  url: string;
  user?: string;
  password?: string;
  configPath: string;
}

/** True when this process may create system accounts (Dante's username auth needs one). */
export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/**
 * Creates a locked-down system account (no home, no login shell) with `password`, for Dante's
 * username method, and returns a function that deletes it. Refuses to touch an existing account.
 */
export async function createThrowawayUser(name: string, password: string): Promise<() => Promise<void>> {
  if (!isRoot()) {
    throw new Error(`creating the system account ${name} for Dante's username auth needs root`);
  }
  if (!/^[a-z_][a-z0-9_-]{0,30}$/.test(name)) throw new Error(`not a valid account name: ${name}`);
  const exists = await run("id", ["-u", name], { timeoutMs: 5000 });
  if (exists.code === 0) throw new Error(`account ${name} already exists; refusing to change its password`);
  const add = await run("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], {
    timeoutMs: 10_000,
  });
  if (add.code !== 0) throw new Error(`useradd ${name} failed: ${add.stderr.trim()}`);
  const pw = await run("chpasswd", [], { input: `${name}:${password}\n`, timeoutMs: 10_000 });
  if (pw.code !== 0) {
    await run("userdel", [name], { timeoutMs: 10_000 });
    throw new Error(`chpasswd for ${name} failed: ${pw.stderr.trim()}`);
  }
  return async () => {
    await run("userdel", [name], { timeoutMs: 10_000 });
  };
}

/**
 * The GSSAPI settings, for the client rule: Dante authenticates while it negotiates, before any
 * socks rule is matched, so settings there would not apply (the keytab is read as root).
 */
function gssapiRule({ gssapi }: DanteOptions): string {
  if (!gssapi) return "";
  return [
    "",
    `  gssapi.keytab: FILE:${gssapi.keytab}`,
    `  gssapi.servicename: ${gssapi.service}`,
    `  gssapi.enctype: ${gssapi.enctype.join(" ")}`,
    "  log: error",
    "",
  ].join("\n");
}

/** danted.conf for one loopback listener, clients from loopback only. */
export function danteConfig(port: number, options: DanteOptions): string {
  const host = options.host ?? "127.0.0.1";
  const from = host.includes(":") ? "::1/128" : "127.0.0.0/8";
  const commands = options.commands ?? ["connect", "bind", "udpassociate", "bindreply", "udpreply"];
  return [
    "logoutput: stderr",
    `internal: ${host} port = ${port}`,
    `external: ${options.external ?? "lo"}`,
    "clientmethod: none",
    `socksmethod: ${options.gssapi ? "gssapi" : options.auth ? "username" : "none"}`,
    // username auth reads the shadow file, which takes the privileged user
    "user.privileged: root",
    // GSSAPI: libkrb5 keeps its replay cache in the test realm's directory (0700, root's), and
    // Dante raises privileges only around parts of the exchange, so it stays root throughout.
    `user.unprivileged: ${options.gssapi ? "root" : "nobody"}`,
    `client pass { from: ${from} to: 0/0${gssapiRule(options)} }`,
    // With GSSAPI, log each session: the line names the Kerberos principal Dante authenticated.
    `socks pass { from: 0/0 to: ${options.to ?? "0/0"} command: ${commands.join(" ")}${options.gssapi ? "\n  log: connect disconnect\n" : ""} }`,
    options.extraConfig ?? "",
    "",
  ].join("\n");
}

/**
 * Starts Dante's server (danted) in the foreground on a free loopback port with a config written
 * to a temporary directory. stop() ends it (and its forked workers) and removes the account and
 * directory it created.
 */
export async function startDante(options: DanteOptions = {}): Promise<RunningDante> {
  const dir = await tempDir("ferry-dante-");
  const configPath = join(dir.path, "danted.conf");
  let removeUser: (() => Promise<void>) | undefined;
  let user: string | undefined;
  let password: string | undefined;
  try {
    if (options.auth) {
      user = options.auth.user ?? `ferryd${randomBytes(4).toString("hex")}`;
      password = options.auth.password ?? randomBytes(12).toString("hex");
      removeUser = await createThrowawayUser(user, password);
    }
    const host = options.host ?? "127.0.0.1";
    const daemon = await startDaemon({
      name: "danted",
      command: options.command ?? DANTED,
      env: options.env,
      host,
      lifetimeSec: options.lifetimeSec,
      // The config names the port, so it is written for each attempt, just before the spawn.
      // Without -D danted stays in the foreground; -N 1 keeps it to one mother process.
      args: (port) => {
        writeFileSync(configPath, danteConfig(port, options), { mode: 0o600 });
        return ["-f", configPath, "-N", "1"];
      },
    });
    const auth = user ? `${encodeURIComponent(user)}:${encodeURIComponent(password!)}@` : "";
    const hostPart = host.includes(":") ? `[${host}]` : host;
    const stop = daemon.stop;
    return {
      ...daemon,
      url: `socks5h://${auth}${hostPart}:${daemon.port}`,
      user,
      password,
      configPath,
      async stop(graceMs?: number) {
        const result = await stop(graceMs);
        await removeUser?.();
        removeUser = undefined;
        await dir.remove();
        return result;
      },
    };
  } catch (err) {
    await removeUser?.();
    await dir.remove();
    throw err;
  }
}
