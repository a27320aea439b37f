import { encodeAddress, encodeAfter, parseAddress, type SocksAddress } from "./address.js";
import { ProtocolError, Reply } from "./errors.js";
import type { Parsed } from "./parse.js";

export const SOCKS5 = 0x05;

export const Method = {
  NO_AUTH: 0x00,
  GSSAPI: 0x01,
  USERPASS: 0x02,
  NO_ACCEPTABLE: 0xff,
} as const;

export const Command = { CONNECT: 0x01, BIND: 0x02, UDP_ASSOCIATE: 0x03 } as const;
export type CommandName = "connect" | "bind" | "udp";

const commandNames: Record<number, CommandName> = { 1: "connect", 2: "bind", 3: "udp" };
const commandCodes: Record<CommandName, number> = { connect: 1, bind: 2, udp: 3 };

export interface Greeting {
  methods: number[];
}

export interface Socks5Request {
  command: CommandName;
  address: SocksAddress;
}

export interface Socks5Reply {
  reply: number;
  address: SocksAddress;
}

/** VER NMETHODS METHODS... — the client's first message. */
export function parseGreeting(buf: Uint8Array): Parsed<Greeting> {
  if (buf.length < 2) return undefined;
  if (buf[0] !== SOCKS5) throw new ProtocolError(`expected SOCKS version 5, got ${buf[0]}`);
  const n = buf[1]!;
  if (n === 0) throw new ProtocolError("greeting lists no authentication methods", Method.NO_ACCEPTABLE);
  if (buf.length < 2 + n) return undefined;
  // Read in place: a Buffer's subarray makes a new Buffer object, and every session has one.
  const methods = new Array<number>(n);
  for (let i = 0; i < n; i++) methods[i] = buf[2 + i]!;
  return { value: { methods }, consumed: 2 + n };
}

export function encodeGreeting(g: Greeting): Buffer {
  if (g.methods.length < 1 || g.methods.length > 255) throw new RangeError("1 to 255 methods required");
  return Buffer.from([SOCKS5, g.methods.length, ...g.methods]);
}

/** VER METHOD — the server's choice. */
export function parseMethodSelection(buf: Uint8Array): Parsed<number> {
  if (buf.length < 2) return undefined;
  if (buf[0] !== SOCKS5)
    throw new ProtocolError(`expected SOCKS version 5 in method selection, got ${buf[0]}`);
  return { value: buf[1]!, consumed: 2 };
}

export function encodeMethodSelection(method: number): Buffer {
  return Buffer.from([SOCKS5, method]);
}

/** VER CMD RSV ATYP DST.ADDR DST.PORT */
export function parseRequest(buf: Uint8Array): Parsed<Socks5Request> {
  if (buf.length < 1) return undefined;
  if (buf[0] !== SOCKS5)
    throw new ProtocolError(`expected SOCKS version 5 in request, got ${buf[0]}`, Reply.GENERAL_FAILURE);
  if (buf.length < 2) return undefined;
  const command = commandNames[buf[1]!];
  if (!command)
    throw new ProtocolError(`unknown command 0x${buf[1]!.toString(16)}`, Reply.COMMAND_NOT_SUPPORTED);
  if (buf.length < 3) return undefined;
  if (buf[2] !== 0)
    throw new ProtocolError("reserved byte of the request is not zero", Reply.GENERAL_FAILURE);
  const parsed = parseAddress(buf, 3);
  if (!parsed) return undefined;
  return { value: { command, address: parsed.address }, consumed: parsed.next };
}

export function encodeRequest(r: Socks5Request): Buffer {
  return Buffer.concat([Buffer.from([SOCKS5, commandCodes[r.command], 0]), encodeAddress(r.address)]);
}

/** VER REP RSV ATYP BND.ADDR BND.PORT */
export function parseReply(buf: Uint8Array): Parsed<Socks5Reply> {
  if (buf.length < 1) return undefined;
  if (buf[0] !== SOCKS5) throw new ProtocolError(`expected SOCKS version 5 in reply, got ${buf[0]}`);
  if (buf.length < 3) return undefined;
  if (buf[2] !== 0) throw new ProtocolError("reserved byte of the reply is not zero");
  const parsed = parseAddress(buf, 3, "as-sent");
  if (!parsed) return undefined;
  return { value: { reply: buf[1]!, address: parsed.address }, consumed: parsed.next };
}

const NO_ADDRESS: SocksAddress = { type: "ipv4", host: "0.0.0.0", port: 0 };

export function encodeReply(reply: number, address: SocksAddress = NO_ADDRESS): Buffer {
  // One buffer per reply (every session sends one), not three and a concatenation.
  const out = encodeAfter(3, address);
  out[0] = SOCKS5;
  out[1] = reply;
  return out;
}
