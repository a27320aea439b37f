import { addressOf, formatAddress, type SocksAddress } from "../protocol/address.js";
import { ProtectionLevel, type ProtectionName } from "../protocol/gssapi.js";
import type { ClientAuthMethod } from "./auth.js";
import { type HopTls, TLS_PARAMS } from "./tls-options.js";

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
  /**
   * Speak to this proxy inside TLS (`https://`, `socks5+tls://`, `socks5h+tls://`), verifying its
   * certificate; URL form: `socks5h+tls://host:port?ca=FILE&cert=FILE&key=FILE&servername=NAME`.
   */
  tls?: HopTls;
}

/** A proxy as a URL string, a `URL`, or an already parsed hop. */
export type ProxyInput = string | URL | ProxyHop;

/** One proxy or a chain of them: each hop is reached through the ones before it. */
export type ProxyChain = ProxyInput | readonly ProxyInput[];

/** Where to connect: `"host:port"`, `"[v6]:port"` or `{ host, port }`. */
export type Target = string | { host: string; port: number };

type Scheme = Pick<ProxyHop, "version" | "remoteDns" | "http"> & { tls?: true; port: number };

const SCHEMES: Record<string, Scheme> = {
  "socks4:": { version: 4, remoteDns: false, port: 1080 },
  "socks4a:": { version: 4, remoteDns: true, port: 1080 },
  "socks5:": { version: 5, remoteDns: false, port: 1080 },
  "socks5h:": { version: 5, remoteDns: true, port: 1080 },
  // `socks://` is what many tools write for "SOCKS5, let the proxy resolve".
  "socks:": { version: 5, remoteDns: true, port: 1080 },
  "socks5+tls:": { version: 5, remoteDns: false, tls: true, port: 1080 },
  "socks5h+tls:": { version: 5, remoteDns: true, tls: true, port: 1080 },
  // HTTP CONNECT (TCP only); the proxy resolves names. Ports default as in any http(s) URL.
  "http:": { version: 5, remoteDns: true, http: true, port: 80 },
  "https:": { version: 5, remoteDns: true, http: true, tls: true, port: 443 },
};

const SCHEME_LIST =
  "socks4://, socks4a://, socks5://, socks5h://, socks5+tls://, socks5h+tls://, http:// or https://";

/**
 * Parses a proxy URL: `socks4://`, `socks4a://`, `socks5://` (client resolves names),
 * `socks5h://` (proxy resolves), `socks5+tls://` and `socks5h+tls://` (SOCKS5 inside TLS),
 * `http://` and `https://` (HTTP CONNECT, plain or inside TLS), with optional percent-encoded
 * `user:password@`. TLS options are URL parameters: `ca`, `cert`, `key` (PEM files) and
 * `servername`. Throws a TypeError that names the accepted forms.
 */
export function parseProxyUrl(input: string | URL): ProxyHop {
  let url: URL;
  try {
    url = typeof input === "string" ? new URL(input.includes("://") ? input : `socks5h://${input}`) : input;
  } catch {
    throw new TypeError(
      `invalid proxy URL "${input}": expected socks5h://[user:password@]host:port or ${SCHEME_LIST}`,
    );
  }
  const scheme = SCHEMES[url.protocol];
  if (!scheme) {
    throw new TypeError(
      `unsupported proxy scheme "${url.protocol}" in ${redact(String(input))}: use ${SCHEME_LIST}`,
    );
  }
  if (!url.hostname) throw new TypeError(`proxy URL ${redact(String(input))} has no host`);
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const { tls, port, ...kind } = scheme;
  const hop: ProxyHop = { ...kind, host, port: url.port ? Number(url.port) : port };
  const tlsOptions = tlsFromParams(url.searchParams, String(input));
  if (tls) hop.tls = tlsOptions;
  else if (Object.keys(tlsOptions).length > 0) {
    throw new TypeError(
      `proxy URL ${redact(String(input))}: ${Object.keys(tlsOptions).join(", ")} apply to TLS only; use https://, socks5+tls:// or socks5h+tls://`,
    );
  }
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

/** ca, cert, key and servername from a URL's parameters; empty values are mistakes. */
function tlsFromParams(params: URLSearchParams, input: string): HopTls {
  const out: HopTls = {};
  for (const name of TLS_PARAMS) {
    const value = params.get(name);
    if (value === null) continue;
    if (!value) throw new TypeError(`proxy URL ${redact(input)}: ${name}= is empty`);
    out[name] = value;
  }
  return out;
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
  const base = hop.http
    ? "http"
    : hop.version === 4
      ? hop.remoteDns
        ? "socks4a"
        : "socks4"
      : hop.remoteDns
        ? "socks5h"
        : "socks5";
  const scheme = !hop.tls ? base : hop.http ? "https" : `${base}+tls`;
  const user = hop.username ? `${encodeURIComponent(hop.username)}@` : "";
  const params: string[] = [];
  if (hop.gssapi) params.push(`gssapi=${encodeURIComponent(hop.gssapi.service ?? "rcmd")}`);
  if (hop.gssapi?.protection) params.push(`protection=${hop.gssapi.protection.join(",")}`);
  for (const name of TLS_PARAMS) {
    const value = hop.tls?.[name];
    // Paths stay readable: '/' and ':' need no escaping in a query.
    if (value !== undefined)
      params.push(`${name}=${encodeURIComponent(value).replace(/%2F/g, "/").replace(/%3A/g, ":")}`);
  }
  const query = params.length > 0 ? `?${params.join("&")}` : "";
  return `${scheme}://${user}${formatAddress({ host: hop.host, port: hop.port })}${query}`;
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
