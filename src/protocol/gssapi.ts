import { ProtocolError } from "./errors.js";
import type { Parsed } from "./parse.js";

/** RFC 1961 framing: VER MTYP LEN(2, big-endian) TOKEN; an abort is VER 0xFF alone. */
export const GSSAPI_VERSION = 0x01;
export const GssMessageType = {
  /** Security context establishment (§3). */
  AUTH: 0x01,
  /** Protection-level sub-negotiation (§4.3). */
  PROTECTION: 0x02,
  /** Encapsulated user data (§5). */
  DATA: 0x03,
  /** The peer refuses (§3.8). */
  ABORT: 0xff,
} as const;
/** The largest TOKEN a LEN of two octets can announce. */
export const GSSAPI_MAX_TOKEN = 0xffff;

/**
 * Protection levels of the sub-negotiation octet. RFC 1961 defines 1 (integrity), 2
 * (confidentiality) and 3 (per-message); 0, "no per-message protection", is what curl and the
 * NEC reference implementation send and accept, so Ferry speaks it too. Level 3 is not offered.
 */
export const ProtectionLevel = { none: 0x00, integrity: 0x01, confidentiality: 0x02 } as const;
export type ProtectionName = keyof typeof ProtectionLevel;

export type GssMessage = { type: "auth" | "protection" | "data"; token: Buffer } | { type: "abort" };

const typeNames: Record<number, "auth" | "protection" | "data"> = {
  [GssMessageType.AUTH]: "auth",
  [GssMessageType.PROTECTION]: "protection",
  [GssMessageType.DATA]: "data",
};

/**
 * One RFC 1961 message. Errors carry reply 0xFF, so a server that answers `[VER, reply]` sends
 * exactly the abort message.
 */
export function parseGssMessage(buf: Uint8Array): Parsed<GssMessage> {
  if (buf.length < 1) return undefined;
  if (buf[0] !== GSSAPI_VERSION) {
    throw new ProtocolError(`expected GSSAPI message version 1, got ${buf[0]}`, GssMessageType.ABORT);
  }
  if (buf.length < 2) return undefined;
  const mtyp = buf[1]!;
  if (mtyp === GssMessageType.ABORT) return { value: { type: "abort" }, consumed: 2 };
  const type = typeNames[mtyp];
  if (!type) throw new ProtocolError(`unknown GSSAPI message type ${mtyp}`, GssMessageType.ABORT);
  if (buf.length < 4) return undefined;
  const len = (buf[2]! << 8) | buf[3]!;
  if (buf.length < 4 + len) return undefined;
  return { value: { type, token: Buffer.from(buf.subarray(4, 4 + len)) }, consumed: 4 + len };
}

/** A parser that accepts only `type`; an abort or any other type is a ProtocolError. */
export function expectGssMessage(type: "auth" | "protection" | "data"): (buf: Uint8Array) => Parsed<Buffer> {
  return (buf) => {
    const parsed = parseGssMessage(buf);
    if (!parsed) return undefined;
    const msg = parsed.value;
    if (msg.type === "abort")
      throw new ProtocolError("the peer aborted GSSAPI authentication", GssMessageType.ABORT);
    if (msg.type !== type) {
      throw new ProtocolError(`expected a GSSAPI ${type} message, got ${msg.type}`, GssMessageType.ABORT);
    }
    return { value: msg.token, consumed: parsed.consumed };
  };
}

export function encodeGssMessage(msg: GssMessage): Buffer {
  if (msg.type === "abort") return Buffer.from([GSSAPI_VERSION, GssMessageType.ABORT]);
  const { token } = msg;
  if (token.length > GSSAPI_MAX_TOKEN) {
    throw new RangeError(`GSSAPI token of ${token.length} bytes exceeds ${GSSAPI_MAX_TOKEN}`);
  }
  const mtyp =
    msg.type === "auth"
      ? GssMessageType.AUTH
      : msg.type === "protection"
        ? GssMessageType.PROTECTION
        : GssMessageType.DATA;
  const out = Buffer.allocUnsafe(4 + token.length);
  out[0] = GSSAPI_VERSION;
  out[1] = mtyp;
  out.writeUInt16BE(token.length, 2);
  token.copy(out, 4);
  return out;
}

export const encodeGssAbort = (): Buffer => encodeGssMessage({ type: "abort" });

/** The unwrapped protection-level token: exactly one octet naming a level Ferry knows. */
export function decodeProtectionLevel(data: Uint8Array): ProtectionName {
  if (data.length !== 1) {
    throw new ProtocolError(
      `GSSAPI protection level must be 1 octet, got ${data.length}`,
      GssMessageType.ABORT,
    );
  }
  const level = data[0]!;
  for (const [name, value] of Object.entries(ProtectionLevel)) {
    if (value === level) return name as ProtectionName;
  }
  throw new ProtocolError(
    `unsupported GSSAPI protection level ${level}${level === 3 ? " (per-message selection)" : ""}`,
    GssMessageType.ABORT,
  );
}

export function encodeProtectionLevel(level: ProtectionName): Buffer {
  return Buffer.from([ProtectionLevel[level]]);
}
