import ipaddr from "ipaddr.js";
import { ProtocolError, Reply } from "./errors.js";
import { readHostName } from "./hostname.js";
import { assertPort, readPort, writePort } from "./parse.js";

export type AddressType = "ipv4" | "ipv6" | "domain";

/** A SOCKS endpoint: an IPv4 or IPv6 literal, or a name the proxy resolves. */
export interface SocksAddress {
  type: AddressType;
  /** Dotted quad, RFC 5952 IPv6 text (no brackets), or the domain name. */
  host: string;
  port: number;
}

export const Atyp = { IPV4: 0x01, DOMAIN: 0x03, IPV6: 0x04 } as const;

const MAX_DOMAIN = 255;

/**
 * A dotted quad in its one plain form (four decimal parts of 0 to 255, no leading zeros): what the
 * kernel reports and our parsers write, and exactly what ipaddr.js calls a valid four-part
 * decimal. Such text is read, compared and normalized as it is; every session has a few, and
 * ipaddr.js parses each with regular expressions.
 */
export function isPlainIpv4(text: string): boolean {
  const n = text.length;
  if (n < 7 || n > 15) return false;
  let parts = 0;
  let value = 0;
  let digits = 0;
  // One past the end reads as a final dot.
  for (let i = 0; i <= n; i++) {
    const c = i < n ? text.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || value > 255) return false;
      parts++;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      // A leading zero, or a fourth digit.
      if ((digits > 0 && value === 0) || digits === 3) return false;
      value = value * 10 + (c - 0x30);
      digits++;
    } else {
      return false;
    }
  }
  return parts === 4;
}

/** Classifies a host string the way a SOCKS5 request would carry it. */
export function addressOf(host: string, port: number): SocksAddress {
  assertPort(port);
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (isPlainIpv4(bare)) return { type: "ipv4", host: bare, port };
  if (ipaddr.IPv6.isValid(bare))
    return { type: "ipv6", host: ipaddr.IPv6.parse(bare).toRFC5952String(), port };
  return { type: "domain", host, port };
}

/** `host:port`, with IPv6 in brackets: the form logs and URLs use. */
export function formatAddress(a: { host: string; port: number; type?: AddressType }): string {
  const v6 = a.type ? a.type === "ipv6" : a.host.includes(":");
  return v6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** Bytes of ATYP + ADDR + PORT as SOCKS5 requests, replies and UDP headers carry them. */
export function encodeAddress(a: SocksAddress): Buffer {
  return encodeAfter(0, a);
}

/**
 * A buffer of `head` bytes (left for the caller to fill) followed by the address: a reply or a
 * header in one allocation, with no concatenation.
 */
export function encodeAfter(head: number, a: SocksAddress): Buffer {
  assertPort(a.port);
  switch (a.type) {
    case "ipv4": {
      const out = Buffer.alloc(head + 7);
      out[head] = Atyp.IPV4;
      out.set(ipv4Bytes(a.host), head + 1);
      writePort(out, head + 5, a.port);
      return out;
    }
    case "ipv6": {
      const out = Buffer.alloc(head + 19);
      out[head] = Atyp.IPV6;
      out.set(ipaddr.IPv6.parse(a.host).toByteArray(), head + 1);
      writePort(out, head + 17, a.port);
      return out;
    }
    case "domain": {
      const length = Buffer.byteLength(a.host, "utf8");
      if (length === 0 || length > MAX_DOMAIN) {
        throw new RangeError(`domain name must be 1 to ${MAX_DOMAIN} bytes, got ${length}`);
      }
      const out = Buffer.alloc(head + 2 + length + 2);
      out[head] = Atyp.DOMAIN;
      out[head + 1] = length;
      out.write(a.host, head + 2, "utf8");
      writePort(out, head + 2 + length, a.port);
      return out;
    }
  }
}

/**
 * How a DOMAINNAME is read. "checked" (requests, UDP headers): through readHostName, so what
 * policy compares is what the resolver gets; an invalid name is refused with 0x04 (host
 * unreachable: a name that cannot exist cannot be reached, as if it did not resolve; 0x01 would
 * blame the proxy and make chaining clients drop a working hop). "as-sent" (replies to our
 * client): the peer is the proxy we chose, and refusing its odd BND.ADDR would fail a working
 * CONNECT over an informational field.
 */
export type NameReading = "checked" | "as-sent";

/** Parses ATYP + ADDR + PORT starting at `at`; returns the address and the offset after it. */
export function parseAddress(
  buf: Uint8Array,
  at: number,
  names: NameReading = "checked",
): { address: SocksAddress; next: number } | undefined {
  if (buf.length < at + 1) return undefined;
  const atyp = buf[at]!;
  switch (atyp) {
    case Atyp.IPV4: {
      if (buf.length < at + 7) return undefined;
      const host = `${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}.${buf[at + 4]}`;
      return { address: { type: "ipv4", host, port: readPort(buf, at + 5) }, next: at + 7 };
    }
    case Atyp.IPV6: {
      if (buf.length < at + 19) return undefined;
      const host = ipv6Text(buf.subarray(at + 1, at + 17));
      return { address: { type: "ipv6", host, port: readPort(buf, at + 17) }, next: at + 19 };
    }
    case Atyp.DOMAIN: {
      if (buf.length < at + 2) return undefined;
      const len = buf[at + 1]!;
      if (len === 0) throw new ProtocolError("empty domain name", Reply.GENERAL_FAILURE);
      if (buf.length < at + 2 + len + 2) return undefined;
      const bytes = buf.subarray(at + 2, at + 2 + len);
      const port = readPort(buf, at + 2 + len);
      const next = at + 4 + len;
      if (names === "as-sent") {
        const host = Buffer.from(bytes.buffer, bytes.byteOffset, len).toString("utf8");
        return { address: { type: "domain", host, port }, next };
      }
      return { address: { ...readHostName(bytes, Reply.HOST_UNREACHABLE), port }, next };
    }
    default:
      throw new ProtocolError(
        `unknown address type 0x${atyp.toString(16)}`,
        Reply.ADDRESS_TYPE_NOT_SUPPORTED,
      );
  }
}

export function ipv4Bytes(host: string): Uint8Array {
  if (!isPlainIpv4(host)) throw new RangeError(`not an IPv4 address: ${host}`);
  const out = new Uint8Array(4);
  let part = 0;
  for (let i = 0; i < host.length; i++) {
    const c = host.charCodeAt(i);
    if (c === 0x2e) part++;
    else out[part] = out[part]! * 10 + (c - 0x30);
  }
  return out;
}

export function ipv6Text(bytes: Uint8Array): string {
  return new ipaddr.IPv6(Array.from(bytes)).toRFC5952String();
}

/**
 * Whether an address text is "this host" rather than a destination: 0.0.0.0/8, ::, and the
 * IPv4-mapped ::ffff:0.0.0.0/104. Connecting to one reaches the local machine on most systems.
 * Lenient on input (brackets, legacy IPv4 forms like `0`), since being wrong here means letting
 * such a target through; false for anything that is not an address.
 */
export function isUnspecifiedIp(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (isPlainIpv4(bare)) return bare.startsWith("0.");
  if (!ipaddr.isValid(bare)) return false;
  let ip = ipaddr.parse(bare);
  if (ip.kind() === "ipv6") {
    const v6 = ip as ipaddr.IPv6;
    if (!v6.isIPv4MappedAddress()) return v6.parts.every((p) => p === 0);
    ip = v6.toIPv4Address();
  }
  return (ip as ipaddr.IPv4).octets[0] === 0;
}

/** The all-zero address of a family: what "no address" means in BIND and UDP requests. */
export function isUnspecified(a: SocksAddress): boolean {
  return (a.type === "ipv4" && a.host === "0.0.0.0") || (a.type === "ipv6" && a.host === "::");
}
