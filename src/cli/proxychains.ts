import { lookup } from "node:dns/promises";
import { accessSync, closeSync, constants, openSync, readSync, statSync } from "node:fs";
import { isIP, isIPv4 } from "node:net";
import path from "node:path";
import type { ProxyHop } from "../client/proxy.js";

/** The executable `name` resolves to through PATH (or as written, when it has a slash). */
export function findProgram(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const candidates = name.includes("/")
    ? [name]
    : (env.PATH ?? "")
        .split(path.delimiter)
        .filter(Boolean)
        .map((dir) => path.join(dir, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      if (statSync(c).isFile()) return c;
    } catch {}
  }
  return undefined;
}

/**
 * Whether `command` runs Node: the node binary itself (this one, or one named node/nodejs), or
 * a script whose #! line names node (npm, npx, most CLIs installed by npm).
 */
export function isNodeProgram(command: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const file = findProgram(command, env);
  if (!file) return false;
  if (file === process.execPath || /^node(js)?(\d+)?$/.test(path.basename(file))) return true;
  const head = Buffer.alloc(256);
  let n = 0;
  try {
    const fd = openSync(file, "r");
    try {
      n = readSync(fd, head, 0, head.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
  const text = head.subarray(0, n).toString("latin1");
  if (!text.startsWith("#!")) return false;
  const line = text.slice(2, text.indexOf("\n") >= 0 ? text.indexOf("\n") : undefined);
  return line.split(/\s+/).some((word) => /(^|\/)node(js)?$/.test(word));
}

/** One hop as proxychains4 takes it: a numeric IPv4 address only. */
export interface ChainsHop {
  type: "socks4" | "socks5";
  ip: string;
  port: number;
  user?: string;
  password?: string;
}

/** The hops with their hosts resolved to IPv4 (proxychains4 reads nothing else). */
export async function chainsHops(chain: readonly ProxyHop[]): Promise<ChainsHop[]> {
  const out: ChainsHop[] = [];
  for (const hop of chain) {
    const where = `${hop.host}:${hop.port}`;
    if (hop.gssapi) throw new Error(`proxychains4 cannot log in to ${where} with GSSAPI`);
    if (hop.tls)
      throw new Error(
        `proxychains4 cannot speak TLS to ${where}: only Node programs go through socks5+tls:// and https:// proxies; give this program a plain socks5:// first hop`,
      );
    if (hop.http) throw new Error(`proxychains4 is not given HTTP hops by ferry run (${where})`);
    let ip = hop.host;
    if (!isIPv4(ip)) {
      // An IPv6 literal "resolves" to itself whatever the family asked.
      ip = isIP(ip)
        ? ""
        : await lookup(hop.host, { family: 4 }).then(
            (a) => a.address,
            () => "",
          );
      if (!isIPv4(ip)) throw new Error(`proxychains4 takes IPv4 addresses only, and ${hop.host} has none`);
    }
    for (const [what, value] of [
      ["user name", hop.username],
      ["password", hop.password],
    ] as const) {
      if (value !== undefined && (value === "" || /\s/.test(value)))
        throw new Error(
          `proxychains4 cannot express the ${what} for ${where}: it is empty or has white space`,
        );
    }
    if (hop.version === 5 && hop.username !== undefined && hop.password === undefined)
      throw new Error(`proxychains4 needs a password with the user name for ${where}`);
    const h: ChainsHop = { type: hop.version === 4 ? "socks4" : "socks5", ip, port: hop.port };
    if (hop.username !== undefined) h.user = hop.username;
    if (hop.password !== undefined) h.password = hop.password;
    out.push(h);
  }
  return out;
}

/**
 * A proxychains4 configuration for the whole chain: every hop in order (strict_chain), names the
 * program looks up resolved by the last hop when it resolves names (proxy_dns), loopback and
 * private destinations included (no localnet exclusions).
 */
export function proxychainsConfig(hops: readonly ChainsHop[], remoteDns: boolean): string {
  const lines = [
    "# written by ferry run for one command; removed when it exits",
    "strict_chain",
    ...(remoteDns ? ["proxy_dns", "remote_dns_subnet 224"] : []),
    "tcp_read_time_out 15000",
    "tcp_connect_time_out 8000",
    "[ProxyList]",
    ...hops.map((h) => {
      // SOCKS4 carries a user ID only; SOCKS5 a user name and password.
      const cred =
        h.type === "socks4" ? (h.user ?? "") : h.user !== undefined ? `${h.user} ${h.password ?? ""}` : "";
      return `${h.type} ${h.ip} ${h.port}${cred ? ` ${cred}` : ""}`.trimEnd();
    }),
  ];
  return `${lines.join("\n")}\n`;
}
