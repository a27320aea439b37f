import { ipv4Bytes, type SocksAddress } from "./address.js";
import { ProtocolError, Socks4Reply } from "./errors.js";
import { readHostName } from "./hostname.js";
import { type Parsed, readPort, writePort } from "./parse.js";

export const SOCKS4 = 0x04;
const MAX_FIELD = 255;

export interface Socks4Request {
  command: "connect" | "bind";
  /**
   * IPv4 for SOCKS4; for SOCKS4a (the 0.0.0.x marker) the checked name, which is an IPv4 or IPv6
   * address when the name was a literal.
   */
  address: SocksAddress;
  userId: string;
}

export interface Socks4ReplyMessage {
  reply: number;
  host: string;
  port: number;
}

/** Finds the NUL that ends a string field starting at `from`; throws when it runs past 255 bytes. */
function nulTerminated(buf: Uint8Array, from: number, what: string): number | undefined {
  const limit = Math.min(buf.length, from + MAX_FIELD + 1);
  for (let i = from; i < limit; i++) if (buf[i] === 0) return i;
  if (buf.length > from + MAX_FIELD)
    throw new ProtocolError(`${what} is longer than ${MAX_FIELD} bytes`, Socks4Reply.REJECTED);
  return undefined;
}

/** VN CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL] */
export function parseSocks4Request(buf: Uint8Array): Parsed<Socks4Request> {
  if (buf.length < 1) return undefined;
  if (buf[0] !== SOCKS4)
    throw new ProtocolError(`expected SOCKS version 4, got ${buf[0]}`, Socks4Reply.REJECTED);
  if (buf.length < 2) return undefined;
  const cd = buf[1];
  if (cd !== 1 && cd !== 2) throw new ProtocolError(`unknown SOCKS4 command ${cd}`, Socks4Reply.REJECTED);
  if (buf.length < 9) return undefined;
  const port = readPort(buf, 2);
  const ip = `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`;
  const userEnd = nulTerminated(buf, 8, "USERID");
  if (userEnd === undefined) return undefined;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const userId = b.toString("utf8", 8, userEnd);
  const command = cd === 1 ? "connect" : "bind";
  // SOCKS4a: 0.0.0.x with x != 0 means "the name follows the USERID".
  const isSocks4a = buf[4] === 0 && buf[5] === 0 && buf[6] === 0 && buf[7] !== 0;
  if (!isSocks4a)
    return { value: { command, address: { type: "ipv4", host: ip, port }, userId }, consumed: userEnd + 1 };
  const hostEnd = nulTerminated(buf, userEnd + 1, "SOCKS4a hostname");
  if (hostEnd === undefined) return undefined;
  if (hostEnd === userEnd + 1) throw new ProtocolError("empty SOCKS4a hostname", Socks4Reply.REJECTED);
  // The NUL ends the name here, but the other bytes need the same check as a SOCKS5 name.
  const host = readHostName(buf.subarray(userEnd + 1, hostEnd), Socks4Reply.REJECTED);
  return { value: { command, address: { ...host, port }, userId }, consumed: hostEnd + 1 };
}

export function encodeSocks4Request(r: Socks4Request): Buffer {
  const user = Buffer.from(r.userId, "utf8");
  if (user.length > MAX_FIELD || user.includes(0))
    throw new RangeError("USERID must be at most 255 bytes, no NUL");
  const head = Buffer.alloc(8);
  head[0] = SOCKS4;
  head[1] = r.command === "connect" ? 1 : 2;
  writePort(head, 2, r.address.port);
  if (r.address.type === "ipv6") throw new RangeError("SOCKS4 cannot carry IPv6 addresses");
  if (r.address.type === "ipv4") {
    const ip = ipv4Bytes(r.address.host);
    // 0.0.0.x (x != 0) is the SOCKS4a marker: a server would read a hostname after the USERID.
    if (ip[0] === 0 && ip[1] === 0 && ip[2] === 0 && ip[3] !== 0)
      throw new RangeError(`${r.address.host} cannot be sent in SOCKS4: it is the SOCKS4a marker`);
    head.set(ip, 4);
    return Buffer.concat([head, user, Buffer.from([0])]);
  }
  const host = Buffer.from(r.address.host, "utf8");
  if (host.length < 1 || host.length > MAX_FIELD || host.includes(0)) {
    throw new RangeError("SOCKS4a hostname must be 1 to 255 bytes, no NUL");
  }
  head.set([0, 0, 0, 1], 4);
  return Buffer.concat([head, user, Buffer.from([0]), host, Buffer.from([0])]);
}

/** VN(0) CD DSTPORT DSTIP */
export function parseSocks4Reply(buf: Uint8Array): Parsed<Socks4ReplyMessage> {
  if (buf.length < 8) return undefined;
  if (buf[0] !== 0) throw new ProtocolError(`SOCKS4 reply version must be 0, got ${buf[0]}`);
  return {
    value: { reply: buf[1]!, port: readPort(buf, 2), host: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}` },
    consumed: 8,
  };
}

export function encodeSocks4Reply(reply: number, host = "0.0.0.0", port = 0): Buffer {
  const out = Buffer.alloc(8);
  out[1] = reply;
  writePort(out, 2, port);
  out.set(ipv4Bytes(host), 4);
  return out;
}
