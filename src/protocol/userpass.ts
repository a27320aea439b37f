import { ProtocolError } from "./errors.js";
import type { Parsed } from "./parse.js";

/** RFC 1929 sub-negotiation version. */
export const USERPASS_VERSION = 0x01;
export const USERPASS_SUCCESS = 0x00;
export const USERPASS_FAILURE = 0x01;

export interface Credentials {
  username: string;
  password: string;
}

/** VER ULEN UNAME PLEN PASSWD (RFC 1929 §2); both fields 1 to 255 octets. */
export function parseUserPassRequest(buf: Uint8Array): Parsed<Credentials> {
  if (buf.length < 1) return undefined;
  if (buf[0] !== USERPASS_VERSION) {
    throw new ProtocolError(`expected username/password version 1, got ${buf[0]}`, USERPASS_FAILURE);
  }
  if (buf.length < 2) return undefined;
  const ulen = buf[1]!;
  if (ulen === 0) throw new ProtocolError("empty username", USERPASS_FAILURE);
  if (buf.length < 2 + ulen + 1) return undefined;
  const plen = buf[2 + ulen]!;
  if (plen === 0) throw new ProtocolError("empty password", USERPASS_FAILURE);
  const end = 3 + ulen + plen;
  if (buf.length < end) return undefined;
  const b = Buffer.from(buf.buffer, buf.byteOffset, end);
  return {
    value: { username: b.toString("utf8", 2, 2 + ulen), password: b.toString("utf8", 3 + ulen, end) },
    consumed: end,
  };
}

export function encodeUserPassRequest(c: Credentials): Buffer {
  const u = Buffer.from(c.username, "utf8");
  const p = Buffer.from(c.password, "utf8");
  if (u.length < 1 || u.length > 255) throw new RangeError("username must be 1 to 255 bytes");
  if (p.length < 1 || p.length > 255) throw new RangeError("password must be 1 to 255 bytes");
  return Buffer.concat([Buffer.from([USERPASS_VERSION, u.length]), u, Buffer.from([p.length]), p]);
}

/** VER STATUS — zero is success, anything else failure. */
export function parseUserPassReply(buf: Uint8Array): Parsed<{ ok: boolean; status: number }> {
  if (buf.length < 2) return undefined;
  if (buf[0] !== USERPASS_VERSION)
    throw new ProtocolError(`expected username/password version 1, got ${buf[0]}`);
  return { value: { ok: buf[1] === USERPASS_SUCCESS, status: buf[1]! }, consumed: 2 };
}

export function encodeUserPassReply(ok: boolean): Buffer {
  return Buffer.from([USERPASS_VERSION, ok ? USERPASS_SUCCESS : USERPASS_FAILURE]);
}
