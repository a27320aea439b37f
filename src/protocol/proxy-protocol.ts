import { isIPv4, isIPv6 } from "node:net";
import ipaddr from "ipaddr.js";
import { ipv4Bytes, ipv6Text } from "./address.js";
import { ProtocolError } from "./errors.js";
import type { Parsed } from "./parse.js";

/**
 * The PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 (a text line) and 2 (binary):
 * a load balancer's first bytes on a connection, naming the client it accepted the connection
 * from. Sans-I/O, like the other codecs here.
 */

/** v1: "PROXY " ... "\r\n", 107 bytes at most with the CRLF. */
export const V1_MAX_LENGTH = 107;
/** v2: the 12-byte signature, version/command, family/transport, a 16-bit length. */
export const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
const V2_FIXED = 16;
/**
 * Longest v2 header taken (fixed part included): the format allows 16 + 65535 bytes, but TLVs
 * rarely fill more than a few hundred, and HAProxy's own receiver stops at its buffer size too.
 * Bounds the memory a connection can hold before it has said who it is.
 */
export const V2_MAX_LENGTH = 16 + 16 * 1024;
const V1_PREFIX = Buffer.from("PROXY ", "latin1");

/** Address block sizes of v2's families: INET, INET6, UNIX. */
const V2_ADDRESS_BYTES: Record<number, number> = { 1: 12, 2: 36, 3: 216 };

export interface ProxyEndpoints {
  family: "ipv4" | "ipv6";
  sourceAddress: string;
  sourcePort: number;
  destinationAddress: string;
  destinationPort: number;
}

/**
 * A parsed header. `endpoints` is absent when the header names no IP client: v2 LOCAL (the
 * balancer's own connection, e.g. a health check), v1 UNKNOWN, or a v2 family other than
 * INET/INET6 (UNSPEC, UNIX). The spec says such connections are served as the real (balancer's)
 * connection; TLVs are skipped unread.
 */
export interface ProxyHeader {
  version: 1 | 2;
  command: "proxy" | "local";
  endpoints?: ProxyEndpoints;
}

/**
 * Whether the bytes so far are, or could still become, a PROXY header: "yes" (a whole signature
 * seen), "no", or "maybe" (a strict prefix of one). A SOCKS or HTTP client's first byte already
 * says no, so telling a header from a direct client never waits for more than the client sent.
 */
export function detectProxyHeader(buf: Uint8Array): "yes" | "no" | "maybe" {
  for (const sig of [V1_PREFIX, V2_SIGNATURE]) {
    const n = Math.min(buf.length, sig.length);
    if (Buffer.compare(Buffer.from(buf.buffer, buf.byteOffset, n), sig.subarray(0, n)) !== 0) continue;
    return n === sig.length ? "yes" : "maybe";
  }
  return "no";
}

/** Reads a v1 or v2 header; anything else is a ProtocolError. */
export function parseProxyHeader(buf: Uint8Array): Parsed<ProxyHeader> {
  if (buf.length === 0) return undefined;
  if (buf[0] === V1_PREFIX[0]) return parseV1(buf);
  if (buf[0] === V2_SIGNATURE[0]) return parseV2(buf);
  throw new ProtocolError("expected a PROXY protocol header");
}

function parseV1(buf: Uint8Array): Parsed<ProxyHeader> {
  const seen = Math.min(buf.length, V1_MAX_LENGTH);
  const bytes = Buffer.from(buf.buffer, buf.byteOffset, seen);
  const prefix = Math.min(seen, V1_PREFIX.length);
  if (!bytes.subarray(0, prefix).equals(V1_PREFIX.subarray(0, prefix)))
    throw new ProtocolError("expected a PROXY protocol header");
  const lf = bytes.indexOf(0x0a);
  if (lf < 0) {
    if (seen >= V1_MAX_LENGTH) throw new ProtocolError(`PROXY v1 header longer than ${V1_MAX_LENGTH} bytes`);
    return undefined;
  }
  if (lf < 1 || bytes[lf - 1] !== 0x0d) throw new ProtocolError("PROXY v1 header not ended by CRLF");
  const line = bytes.subarray(V1_PREFIX.length, lf - 1).toString("latin1");
  const fields = line.split(" ");
  const consumed = lf + 1;
  // "UNKNOWN" may be followed by anything up to the CRLF, which the receiver ignores.
  if (fields[0] === "UNKNOWN") return { value: { version: 1, command: "proxy" }, consumed };
  if (fields[0] !== "TCP4" && fields[0] !== "TCP6")
    throw new ProtocolError(`PROXY v1 protocol "${printable(fields[0]!)}" is not TCP4, TCP6 or UNKNOWN`);
  if (fields.length !== 5) throw new ProtocolError("PROXY v1 header has not 5 fields after PROXY");
  const family = fields[0] === "TCP4" ? "ipv4" : "ipv6";
  const valid = family === "ipv4" ? isIPv4 : isIPv6;
  const [, src, dst, sport, dport] = fields as [string, string, string, string, string];
  for (const a of [src, dst]) {
    if (!valid(a)) throw new ProtocolError(`PROXY v1 address "${printable(a)}" is not ${fields[0]}`);
  }
  return {
    value: {
      version: 1,
      command: "proxy",
      endpoints: {
        family,
        sourceAddress: src,
        sourcePort: v1Port(sport),
        destinationAddress: dst,
        destinationPort: v1Port(dport),
      },
    },
    consumed,
  };
}

/** Decimal 0..65535 without leading zeros, as the spec writes it. */
function v1Port(text: string): number {
  if (!/^(0|[1-9]\d{0,4})$/.test(text) || Number(text) > 65535)
    throw new ProtocolError(`PROXY v1 port "${printable(text)}" is not 0 to 65535`);
  return Number(text);
}

function printable(text: string): string {
  return text.slice(0, 40).replace(/[^\x20-\x7e]/g, "?");
}

function parseV2(buf: Uint8Array): Parsed<ProxyHeader> {
  const n = Math.min(buf.length, V2_SIGNATURE.length);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== V2_SIGNATURE[i]) throw new ProtocolError("expected a PROXY protocol header");
  }
  if (buf.length < V2_FIXED) return undefined;
  const versionCommand = buf[12]!;
  if (versionCommand >> 4 !== 2)
    throw new ProtocolError(`PROXY v2 header of version ${versionCommand >> 4}, expected 2`);
  const cmd = versionCommand & 0x0f;
  if (cmd > 1) throw new ProtocolError(`PROXY v2 command ${cmd} is neither LOCAL nor PROXY`);
  const familyTransport = buf[13]!;
  const length = (buf[14]! << 8) | buf[15]!;
  if (V2_FIXED + length > V2_MAX_LENGTH)
    throw new ProtocolError(`PROXY v2 header of ${V2_FIXED + length} bytes, more than ${V2_MAX_LENGTH}`);
  const family = familyTransport >> 4;
  const transport = familyTransport & 0x0f;
  if (family > 3 || transport > 2)
    throw new ProtocolError(
      `PROXY v2 family/transport byte 0x${familyTransport.toString(16)} is not defined`,
    );
  const addressBytes = V2_ADDRESS_BYTES[family] ?? 0;
  if (length < addressBytes)
    throw new ProtocolError(`PROXY v2 length ${length} is shorter than its address block (${addressBytes})`);
  if (buf.length < V2_FIXED + length) return undefined;
  const consumed = V2_FIXED + length;
  // LOCAL: the balancer speaking for itself; its address block, if any, is to be ignored.
  if (cmd === 0) return { value: { version: 2, command: "local" }, consumed };
  // Only TCP over IPv4 or IPv6 names a client we can use; the rest is served as the balancer.
  if (transport !== 1 || (family !== 1 && family !== 2))
    return { value: { version: 2, command: "proxy" }, consumed };
  const at = V2_FIXED;
  const endpoints: ProxyEndpoints =
    family === 1
      ? {
          family: "ipv4",
          sourceAddress: ipv4(buf, at),
          destinationAddress: ipv4(buf, at + 4),
          sourcePort: port(buf, at + 8),
          destinationPort: port(buf, at + 10),
        }
      : {
          family: "ipv6",
          sourceAddress: ipv6(buf, at),
          destinationAddress: ipv6(buf, at + 16),
          sourcePort: port(buf, at + 32),
          destinationPort: port(buf, at + 34),
        };
  return { value: { version: 2, command: "proxy", endpoints }, consumed };
}

function ipv4(buf: Uint8Array, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

function ipv6(buf: Uint8Array, at: number): string {
  return ipv6Text(buf.subarray(at, at + 16));
}

function port(buf: Uint8Array, at: number): number {
  return (buf[at]! << 8) | buf[at + 1]!;
}

/** A v1 header for `e` (for tests and for upstreams that ask for v1). */
export function encodeProxyV1(e?: ProxyEndpoints): Buffer {
  if (!e) return Buffer.from("PROXY UNKNOWN\r\n", "latin1");
  const proto = e.family === "ipv4" ? "TCP4" : "TCP6";
  return Buffer.from(
    `PROXY ${proto} ${e.sourceAddress} ${e.destinationAddress} ${e.sourcePort} ${e.destinationPort}\r\n`,
    "latin1",
  );
}

/** A v2 header: PROXY over TCP for `e`, LOCAL without it; `tlvs` appended as given. */
export function encodeProxyV2(e?: ProxyEndpoints, tlvs: Uint8Array = Buffer.alloc(0)): Buffer {
  const addressBytes = e ? (e.family === "ipv4" ? 12 : 36) : 0;
  const length = addressBytes + tlvs.length;
  if (V2_FIXED + length > V2_MAX_LENGTH) throw new RangeError("PROXY v2 header too long");
  const out = Buffer.alloc(V2_FIXED + length);
  V2_SIGNATURE.copy(out, 0);
  out[12] = e ? 0x21 : 0x20;
  out[13] = e ? (e.family === "ipv4" ? 0x11 : 0x21) : 0x00;
  out.writeUInt16BE(length, 14);
  if (e) {
    const raw = [e.sourceAddress, e.destinationAddress].map((a) => ipBytes(a, e.family));
    let at = V2_FIXED;
    for (const b of raw) {
      b.copy(out, at);
      at += b.length;
    }
    out.writeUInt16BE(checkedPort(e.sourcePort), at);
    out.writeUInt16BE(checkedPort(e.destinationPort), at + 2);
  }
  Buffer.from(tlvs).copy(out, V2_FIXED + addressBytes);
  return out;
}

function checkedPort(p: number): number {
  if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new RangeError(`invalid port ${p}`);
  return p;
}

function ipBytes(text: string, family: "ipv4" | "ipv6"): Buffer {
  if (family === "ipv4") return Buffer.from(ipv4Bytes(text));
  if (!isIPv6(text)) throw new RangeError(`${text} is not an IPv6 address`);
  return Buffer.from(ipaddr.IPv6.parse(text).toByteArray());
}
