import { isIPv6 } from "node:net";
import ipaddr from "ipaddr.js";
import { ProtocolError } from "./errors.js";

/**
 * Host names as a server receives them (SOCKS5 DOMAINNAME, SOCKS4a HOSTNAME), checked before
 * policy, the resolver or an upstream sees them. Rules compare whole strings but resolvers read
 * C strings and legacy number forms, so a name is only let through in a form where both agree:
 *
 * - bytes: ASCII letters, digits, `-`, `_` and `.` only. NUL, spaces, controls and `%` are refused;
 *   so is any byte >= 0x80: internationalised names travel in their xn-- (A-label) form.
 * - shape: labels of 1 to 63 bytes (no `a..b`, no leading dot), none starting or ending with a
 *   hyphen; at most 253 bytes, 254 with the one trailing dot that is then dropped.
 * - case: folded to lower case, the form policy compares in.
 * - numbers: a name whose last label is a number (`0`, `2130706433`, `127.1`, `0x7f.1`,
 *   `017700000001`) is an address to getaddrinfo, not a name. A canonical dotted quad becomes an
 *   IPv4 address and an IPv6 literal (optionally in brackets) an IPv6 one, so policy sees the
 *   address; so does `0` (0.0.0.0, what PySocks sends for "no address"); every other numeric
 *   form is refused. No real top-level domain is numeric.
 */
export type CheckedHost = { type: "domain" | "ipv4" | "ipv6"; host: string };

export type HostCheck = ({ ok: true } & CheckedHost) | { ok: false; why: string };

const MAX_NAME = 253;
const MAX_LABEL = 63;
const DOT = 0x2e;
const HYPHEN = 0x2d;

/** Letters, digits, hyphen, underscore, dot. */
function nameByte(b: number): boolean {
  return (
    (b >= 0x61 && b <= 0x7a) ||
    (b >= 0x41 && b <= 0x5a) ||
    (b >= 0x30 && b <= 0x39) ||
    b === HYPHEN ||
    b === 0x5f ||
    b === DOT
  );
}

/** What getaddrinfo would read as a number: all digits, or 0x and hex digits (WHATWG's "ends in a number"). */
const NUMERIC_LABEL = /^(?:[0-9]+|0x[0-9a-f]*)$/;
/** Four decimal parts without leading zeros: leading zeros are octal to inet_aton. */
const DOTTED_QUAD =
  /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$/;
const IPV6_CHARS = /^[0-9a-fA-F:.]+$/;

/** Checks and normalises one host name given as the bytes that arrived. Never throws. */
export function checkHostName(bytes: Uint8Array): HostCheck {
  if (bytes.length === 0) return { ok: false, why: "empty" };
  const v6 = ipv6Literal(bytes);
  if (v6 !== undefined) return v6;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (nameByte(b)) continue;
    if (b === 0) return { ok: false, why: `NUL byte at ${i}` };
    if (b >= 0x80)
      return { ok: false, why: `non-ASCII byte 0x${hex2(b)} at ${i} (send internationalised names as xn--)` };
    return { ok: false, why: `byte "${escapeByte(b)}" at ${i} is not allowed in a host name` };
  }
  // Only ASCII from here on, so string offsets are byte offsets.
  let name = Buffer.from(bytes).toString("latin1").toLowerCase();
  if (name.length > 1 && name.endsWith(".")) name = name.slice(0, -1);
  if (name.length > MAX_NAME) return { ok: false, why: `${name.length} bytes long, at most ${MAX_NAME}` };
  let at = 0;
  for (const label of name.split(".")) {
    if (label.length === 0) return { ok: false, why: `empty label at ${at}` };
    if (label.length > MAX_LABEL)
      return { ok: false, why: `label at ${at} is ${label.length} bytes long, at most ${MAX_LABEL}` };
    if (label.charCodeAt(0) === HYPHEN) return { ok: false, why: `label at ${at} starts with a hyphen` };
    if (label.charCodeAt(label.length - 1) === HYPHEN)
      return { ok: false, why: `label at ${at} ends with a hyphen` };
    at += label.length + 1;
  }
  const last = name.slice(name.lastIndexOf(".") + 1);
  if (NUMERIC_LABEL.test(last)) {
    if (DOTTED_QUAD.test(name)) return { ok: true, type: "ipv4", host: name };
    // PySocks asks for UDP ASSOCIATE with the name "0" ("no address"); it means 0.0.0.0, which
    // policy then sees as the unspecified address it is.
    if (name === "0") return { ok: true, type: "ipv4", host: "0.0.0.0" };
    return { ok: false, why: "a number that is not a dotted-quad IPv4 address (resolvers read it as one)" };
  }
  return { ok: true, type: "domain", host: name };
}

/**
 * An IPv6 literal (bare or in brackets) as its RFC 5952 text; undefined when the bytes do not
 * look like one, a failure when they look like one but are not.
 */
function ipv6Literal(bytes: Uint8Array): HostCheck | undefined {
  if (!bytes.includes(0x3a)) return undefined;
  let text = Buffer.from(bytes).toString("latin1");
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  if (!IPV6_CHARS.test(text)) return undefined;
  // isIPv6 is inet_pton: strict about an embedded IPv4 part (no 127.1, no leading zeros).
  if (!isIPv6(text)) return { ok: false, why: "not a valid IPv6 address" };
  // ipaddr.js reads ::1.2.3.4 as ::ffff:1.2.3.4; write the IPv4 part as hex so it cannot.
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (tail) {
    const [a, b, c, d] = tail.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, tail.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  return { ok: true, type: "ipv6", host: ipaddr.IPv6.parse(text).toRFC5952String() };
}

/**
 * The checked host, or a ProtocolError carrying `reply` whose message shows the bytes escaped:
 * `invalid host name "localhost\x00anything": NUL byte at 9`.
 */
export function readHostName(bytes: Uint8Array, reply: number): CheckedHost {
  const r = checkHostName(bytes);
  if (!r.ok) throw new ProtocolError(`invalid host name "${escapeBytes(bytes)}": ${r.why}`, reply);
  return { type: r.type, host: r.host };
}

/** Printable ASCII as itself (with `"` and `\` escaped), everything else as \xNN. */
export function escapeBytes(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += escapeByte(b);
  return out;
}

function escapeByte(b: number): string {
  if (b === 0x22 || b === 0x5c) return `\\${String.fromCharCode(b)}`;
  return b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${hex2(b)}`;
}

const hex2 = (b: number): string => b.toString(16).padStart(2, "0");
