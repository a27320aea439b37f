import { formatAddress, type SocksAddress } from "./address.js";
import { ProtocolError, Reply } from "./errors.js";
import type { Parser } from "./parse.js";

/** An HTTP proxy's answer to CONNECT: status line and headers (names lower-cased). */
export interface HttpConnectResponse {
  /** 1.0 or 1.1. */
  version: string;
  status: number;
  reason: string;
  headers: Map<string, string>;
}

/** More than this before the blank line is not a proxy's answer to CONNECT. */
const MAX_HEAD = 16 * 1024;

/**
 * `CONNECT host:port HTTP/1.1` with Host and, when credentials are given, Basic
 * Proxy-Authorization (RFC 9110 §9.3.6, RFC 7617). IPv6 literals go in brackets.
 */
export function encodeHttpConnect(
  target: SocksAddress,
  credentials?: { user: string; password: string },
): Buffer {
  if (/[\s\0]/.test(target.host)) throw new RangeError(`not a host name: ${JSON.stringify(target.host)}`);
  const authority = formatAddress(target);
  const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`];
  if (credentials) {
    if (credentials.user.includes(":")) throw new RangeError("an HTTP Basic user name cannot contain ':'");
    const token = Buffer.from(`${credentials.user}:${credentials.password}`, "utf8").toString("base64");
    lines.push(`Proxy-Authorization: Basic ${token}`);
  }
  return Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1");
}

/**
 * Parses the response head up to and including the blank line; bytes after it belong to the
 * tunnel and are not consumed. Accepts bare LF line ends, as many proxies send them.
 */
export const parseHttpConnectResponse: Parser<HttpConnectResponse> = (buf) => {
  const bytes = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  let end = -1;
  let headEnd = -1;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== 0x0a) continue;
    if (bytes[i + 1] === 0x0a) {
      headEnd = i;
      end = i + 2;
      break;
    }
    if (bytes[i + 1] === 0x0d && bytes[i + 2] === 0x0a) {
      headEnd = i;
      end = i + 3;
      break;
    }
  }
  if (end < 0) {
    if (bytes.length > MAX_HEAD) {
      throw new ProtocolError(`HTTP proxy response head exceeds ${MAX_HEAD} bytes`, Reply.GENERAL_FAILURE);
    }
    // A first byte that cannot start "HTTP/" is not worth waiting on.
    if (bytes.length > 0 && !"HTTP/".startsWith(bytes.subarray(0, 5).toString("latin1"))) {
      throw new ProtocolError(
        `not an HTTP response: starts with ${JSON.stringify(bytes.subarray(0, 16).toString("latin1"))}`,
        Reply.GENERAL_FAILURE,
      );
    }
    return undefined;
  }
  const lines = bytes
    .subarray(0, headEnd)
    .toString("latin1")
    .split("\n")
    .map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
  const m = /^HTTP\/(1\.[01]) (\d{3})(?: (.*))?$/.exec(lines[0]!);
  if (!m) {
    throw new ProtocolError(
      `malformed HTTP status line: ${JSON.stringify(lines[0]!.slice(0, 80))}`,
      Reply.GENERAL_FAILURE,
    );
  }
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0 || /\s/.test(line.slice(0, colon))) {
      throw new ProtocolError(
        `malformed HTTP header line: ${JSON.stringify(line.slice(0, 80))}`,
        Reply.GENERAL_FAILURE,
      );
    }
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  return {
    value: { version: m[1]!, status: Number(m[2]), reason: m[3] ?? "", headers },
    consumed: end,
  };
};

/**
 * The SOCKS reply a client should get when an HTTP proxy refuses CONNECT: the proxy's status
 * says whose fault it is as well as HTTP can.
 */
export function replyForHttpStatus(status: number): number {
  if (status === 401 || status === 403 || status === 407) return Reply.NOT_ALLOWED;
  if (status === 502) return Reply.HOST_UNREACHABLE;
  if (status === 504) return Reply.TTL_EXPIRED;
  if (status === 503) return Reply.CONNECTION_REFUSED;
  return Reply.GENERAL_FAILURE;
}
