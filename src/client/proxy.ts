import { addressOf, formatAddress, type SocksAddress } from "../protocol/address.js";
import { ProtectionLevel, type ProtectionName } from "../protocol/gssapi.js";
import type { ClientAuthMethod } from "./auth.js";

/** One proxy of a chain, as parsed from a URL such as `socks5h://user:pass@host:1080`. */
export interface ProxyHop {
  /** SOCKS protocol version spoken to this proxy. */
  version: 4 | 5;
  /**
   * True when the proxy resolves names (`socks4a://`, `socks5h://`); false when the client
   * resolves them first and sends an address (`socks4://`, `socks5://`).
   */
  remoteDns: boolean;
  /** Host name or IP literal of the proxy (IPv6 without brackets). */
  host: string;
  /** Port of the proxy; 1080 when the URL has none. */
  port: number;
  /** RFC 1929 user name (SOCKS5), or the SOCKS4 USERID. */
  username?: string;
  /** RFC 1929 password (SOCKS5 only). */
  password?: string;
  /**
   * SOCKS5 methods to offer, in order of preference. Default: username/password (when
   * credentials are given) and "no authentication".
   */
  methods?: ClientAuthMethod[];
  /**
   * An HTTP proxy, spoken to with CONNECT and Basic credentials; TCP CONNECT only. Set by
   * callers that build hops (Ferry's upstream chains), not by parseProxyUrl. `version` is then 5
   * only for the error type and means nothing on the wire.
   */
  http?: boolean;
  /**
   * Authenticate with Kerberos (GSSAPI, RFC 1961) instead: `service` is the proxy's service
   * ("rcmd", completed to rcmd@<proxy host>; or a full "rcmd/host@REALM"). `protection` lists the
   * levels this client accepts, most preferred first (the first is the one it asks for; default
   * confidentiality, integrity). URL form:
   * `socks5h://host:port?gssapi=rcmd&protection=integrity,confidentiality`. Needs the GSSAPI
   * add-on and a ticket (kinit).
   */
  gssapi?: { service?: string; protection?: ProtectionName[]; ccache?: string };
}

/** A proxy as a URL string, a `URL`, or an already parsed hop. */
export type ProxyInput = string | URL | ProxyHop;

/** One proxy or a chain of them: each hop is reached through the ones before it. */
export type ProxyChain = ProxyInput | readonly ProxyInput[];

/** Where to connect: `"host:port"`, `"[v6]:port"` or `{ host, port }`. */
export type Target = string | { host: string; port: number };

const SCHEMES: Record<string, { version: 4 | 5; remoteDns: boolean }> = {
  "socks4:": { version: 4, remoteDns: false },
  "socks4a:": { version: 4, remoteDns: true },
  "socks5:": { version: 5, remoteDns: false },
  "socks5h:": { version: 5, remoteDns: true },
  // `socks://` is what many tools write for "SOCKS5, let the proxy resolve".
  "socks:": { version: 5, remoteDns: true },
};

/**
 * Parses a proxy URL: `socks4://`, `socks4a://`, `socks5://` (client resolves names),
 * `socks5h://` (proxy resolves), with optional percent-encoded `user:password@`.
 * Throws a TypeError that names the accepted forms.
 */
export function parseProxyUrl(input: string | URL): ProxyHop {
  let url: URL;
  try {
    url = typeof input === "string" ? new URL(input.includes("://") ? input : `socks5h://${input}`) : input;
  } catch {
    throw new TypeError(`invalid proxy URL "${input}": expected socks5h://[user:password@]host:port`);
  }
  const scheme = SCHEMES[url.protocol];
  if (!scheme) {
    throw new TypeError(
      `unsupported proxy scheme "${url.protocol}" in ${redact(String(input))}: use socks4://, socks4a://, socks5:// or socks5h://`,
    );
  }
  if (!url.hostname) throw new TypeError(`proxy URL ${redact(String(input))} has no host`);
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const hop: ProxyHop = { ...scheme, host, port: url.port ? Number(url.port) : 1080 };
  if (url.username) hop.username = decodeURIComponent(url.username);
  if (url.password) hop.password = decodeURIComponent(url.password);
  const gssapi = url.searchParams.get("gssapi");
  const protection = url.searchParams.get("protection");
  if (gssapi !== null) hop.gssapi = { service: gssapi || "rcmd" };
  if (protection !== null) {
    if (!hop.gssapi) {
      throw new TypeError(
        `proxy URL ${redact(String(input))}: protection= applies to GSSAPI only; add gssapi=SERVICE`,
      );
    }
    hop.gssapi.protection = parseProtectionList(protection, String(input));
  }
  return hop;
}

/** "integrity,confidentiality" → the levels in that order; names the accepted ones otherwise. */
function parseProtectionList(list: string, input: string): ProtectionName[] {
  const levels: ProtectionName[] = [];
  for (const raw of list.split(",")) {
    const name = raw.trim();
    if (!Object.hasOwn(ProtectionLevel, name)) {
      throw new TypeError(
        `proxy URL ${redact(input)}: unknown protection "${name}"; use a comma-separated list of none, integrity, confidentiality`,
      );
    }
    if (!levels.includes(name as ProtectionName)) levels.push(name as ProtectionName);
  }
  return levels;
}

/** Normalises one proxy or a chain into parsed hops; throws on an empty chain. */
export function parseChain(proxy: ProxyChain): ProxyHop[] {
  const list = Array.isArray(proxy) ? proxy : [proxy as ProxyInput];
  if (list.length === 0) throw new TypeError("the proxy chain is empty: give at least one proxy URL");
  return list.map((p: ProxyInput) => (typeof p === "string" || p instanceof URL ? parseProxyUrl(p) : p));
}

/** The proxy as a URL without its password, for messages and logs. */
export function describeHop(hop: ProxyHop): string {
  const scheme = hop.http
    ? "http"
    : hop.version === 4
      ? hop.remoteDns
        ? "socks4a"
        : "socks4"
      : hop.remoteDns
        ? "socks5h"
        : "socks5";
  const user = hop.username ? `${encodeURIComponent(hop.username)}@` : "";
  const protection = hop.gssapi?.protection ? `&protection=${hop.gssapi.protection.join(",")}` : "";
  const gssapi = hop.gssapi ? `?gssapi=${encodeURIComponent(hop.gssapi.service ?? "rcmd")}${protection}` : "";
  return `${scheme}://${user}${formatAddress({ host: hop.host, port: hop.port })}${gssapi}`;
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@");
}

/** Parses a target into a SOCKS address; names stay names, IP literals become addresses. */
export function parseTarget(target: Target): SocksAddress {
  if (typeof target !== "string") return addressOf(target.host, target.port);
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(target) ?? /^([^:]+):(\d+)$/.exec(target);
  if (!m) throw new TypeError(`invalid target "${target}": expected host:port or [ipv6]:port`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new TypeError(`invalid port in target "${target}"`);
  return addressOf(m[1]!, port);
}
