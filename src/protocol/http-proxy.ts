import type { SocksAddress } from "./address.js";
import { checkHostName } from "./hostname.js";

/**
 * What an HTTP proxy server reads from a request line and headers once llhttp has parsed them
 * (src/server/http/): the target of CONNECT or of an absolute URI, the Basic login, and which
 * headers are the connection's own (hop-by-hop, RFC 9110 §7.6.1) and never forwarded. Pure.
 */

/** A request the proxy cannot serve, with the status and the words the client gets. */
export class HttpRequestError extends Error {
  override name = "HttpRequestError";
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export type ProxyRequestTarget =
  | { kind: "connect"; target: SocksAddress }
  | { kind: "forward"; target: SocksAddress /** origin-form: path and query */; path: string };

/** `host:port` (CONNECT, RFC 9110 §9.3.6): the port is required, an IPv6 literal in brackets. */
export function parseAuthority(text: string, defaultPort?: number): SocksAddress {
  let host: string;
  let port: string | undefined;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) throw new HttpRequestError(`unclosed IPv6 literal in ${JSON.stringify(text)}`, 400);
    host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== "" && !rest.startsWith(":"))
      throw new HttpRequestError(`bad authority ${JSON.stringify(text)}`, 400);
    port = rest === "" ? undefined : rest.slice(1);
  } else {
    const colon = text.lastIndexOf(":");
    host = colon < 0 ? text : text.slice(0, colon);
    port = colon < 0 ? undefined : text.slice(colon + 1);
    if (host.includes(":")) throw new HttpRequestError(`put an IPv6 address in brackets: ${text}`, 400);
  }
  if (port === undefined || port === "") {
    if (defaultPort === undefined)
      throw new HttpRequestError(`CONNECT needs host:port, got ${JSON.stringify(text)}`, 400);
    port = String(defaultPort);
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535)
    throw new HttpRequestError(`bad port ${JSON.stringify(port)} in ${JSON.stringify(text)}`, 400);
  // The same check SOCKS names get, so rules and resolvers read names alike on both protocols.
  const checked = checkHostName(Buffer.from(host, "latin1"));
  if (!checked.ok) throw new HttpRequestError(`bad host ${JSON.stringify(host)}: ${checked.why}`, 400);
  return { type: checked.type, host: checked.host, port: Number(port) };
}

/**
 * The target of a request to a proxy: CONNECT's authority, or an absolute `http://` URI
 * (RFC 9112 §3.2.2). A path alone (origin-form) is a request to the proxy itself, and an
 * `https://` URI would need the proxy to speak TLS to the target: both are refused with a hint.
 */
export function parseProxyTarget(method: string, url: string): ProxyRequestTarget {
  if (method === "CONNECT") return { kind: "connect", target: parseAuthority(url) };
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(url);
  if (!scheme) {
    throw new HttpRequestError(
      `${method} ${url.slice(0, 100)} names no host: this is a proxy; send absolute URIs (GET http://host/path) or CONNECT host:port`,
      400,
    );
  }
  if (scheme[1]!.toLowerCase() !== "http") {
    throw new HttpRequestError(
      `${scheme[1]}:// URIs are not fetched by this proxy; use CONNECT (an https:// proxy client does)`,
      400,
    );
  }
  const rest = url.slice(scheme[0].length);
  const end = rest.search(/[/?#]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  if (authority.includes("@"))
    throw new HttpRequestError("credentials in the URI are not forwarded; remove user:password@", 400);
  let path = end < 0 ? "/" : rest.slice(end);
  const hash = path.indexOf("#");
  if (hash >= 0) path = path.slice(0, hash);
  if (path.startsWith("?")) path = `/${path}`;
  if (path === "") path = "/";
  return { kind: "forward", target: parseAuthority(authority, 80), path };
}

/** Names that belong to one connection and are never forwarded (lower case). */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
]);

/**
 * `rawHeaders` (name, value, name, value, ...) without the hop-by-hop ones: the fixed list,
 * every `Proxy-*` header, and every header the Connection header names. `drop` adds names
 * (lower case) the caller sets itself.
 */
export function endToEndHeaders(raw: readonly string[], drop: readonly string[] = []): string[] {
  const named = new Set(drop);
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== "connection") continue;
    for (const token of raw[i + 1]!.split(",")) {
      const name = token.trim().toLowerCase();
      if (name) named.add(name);
    }
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || name.startsWith("proxy-") || named.has(name)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/** The Via entry this proxy adds (RFC 9110 §7.6.3): the protocol version received, and our name. */
export function viaEntry(httpVersion: string): string {
  return `${httpVersion === "1.0" ? "1.0" : "1.1"} ferry`;
}

/** A Via header value: ours appended to what the message carried. */
export function appendVia(existing: readonly string[], httpVersion: string): string {
  return [...existing, viaEntry(httpVersion)].join(", ");
}

export type BasicCredentials = { user: string; password: string };

/**
 * `Proxy-Authorization: Basic base64(user:password)` (RFC 7617); undefined when absent. Another
 * scheme or a malformed token is an error the client is told about (407).
 */
export function parseBasicCredentials(value: string | undefined): BasicCredentials | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+(.*?))?\s*$/.exec(value);
  if (!m) throw new HttpRequestError("malformed Proxy-Authorization header", 407);
  if (m[1]!.toLowerCase() !== "basic")
    throw new HttpRequestError(`Proxy-Authorization scheme ${m[1]} is not supported; use Basic`, 407);
  const token = m[2] ?? "";
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(token) || token.length % 4 !== 0)
    throw new HttpRequestError("Proxy-Authorization Basic credentials are not valid base64", 407);
  const text = Buffer.from(token, "base64").toString("utf8");
  const colon = text.indexOf(":");
  if (colon < 0) throw new HttpRequestError("Proxy-Authorization Basic credentials lack the ':'", 407);
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}
