import { encodeAddress, parseAddress, type SocksAddress } from "./address.js";
import { ProtocolError } from "./errors.js";

/** RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA — the header of every relayed UDP datagram. */
export interface UdpDatagram {
  /** 0 for a whole datagram; 1..127 a fragment position, high bit set on the last fragment. */
  frag: number;
  address: SocksAddress;
  data: Buffer;
}

/** A datagram is whole or it is nothing: a truncated header is an error, not "need more". */
export function parseUdpDatagram(buf: Uint8Array): UdpDatagram {
  if (buf.length < 4)
    throw new ProtocolError(`UDP datagram of ${buf.length} bytes is too short for a header`);
  if (buf[0] !== 0 || buf[1] !== 0) throw new ProtocolError("reserved bytes of the UDP header are not zero");
  const parsed = parseAddress(buf, 3);
  if (!parsed) throw new ProtocolError("UDP datagram is truncated inside its address");
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  return { frag: buf[2]!, address: parsed.address, data: b.subarray(parsed.next) };
}

export function encodeUdpHeader(address: SocksAddress, frag = 0): Buffer {
  if (!Number.isInteger(frag) || frag < 0 || frag > 255) throw new RangeError(`invalid FRAG ${frag}`);
  return Buffer.concat([Buffer.from([0, 0, frag]), encodeAddress(address)]);
}

export function encodeUdpDatagram(d: UdpDatagram): Buffer {
  return Buffer.concat([encodeUdpHeader(d.address, d.frag), d.data]);
}

/** Fragment position without the end-of-sequence bit, and whether this fragment ends the sequence. */
export function fragmentPosition(frag: number): { position: number; last: boolean } {
  return { position: frag & 0x7f, last: (frag & 0x80) !== 0 };
}
