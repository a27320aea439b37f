import type { SocksAddress } from "./address.js";
import { fragmentPosition, type UdpDatagram } from "./udp.js";

/**
 * The largest payload one UDP datagram can carry over IPv4 (65535 - 8 UDP - 20 IP). A reassembled
 * datagram larger than this could not be sent on anyway, so it is also the default size bound.
 */
export const MAX_UDP_PAYLOAD = 65_507;

export interface PushResult {
  /** A whole datagram to relay: a standalone one (FRAG 0) or a completed reassembly. */
  datagram?: UdpDatagram;
  /** Fragments thrown away by this push: the abandoned queue and/or this fragment itself. */
  dropped: number;
  /** Why they were dropped, for counting. */
  reason?: "out of order" | "missing fragment" | "too large" | "destination changed" | "invalid position";
  /** This fragment began a new sequence: the caller (re)starts its reassembly timer. */
  started: boolean;
}

/**
 * The reassembly queue of RFC 1928 §7 for one association, without the timer (the caller owns
 * it, so this stays pure). FRAG 1..127 is a position, the high bit marks the last fragment, 0 is
 * a standalone datagram. A datagram with a FRAG lower than the highest seen abandons the queue.
 *
 * The RFC leaves gaps unspecified; we require positions 1, 2, 3... in order, because a gap means
 * a fragment was lost and delivering the rest would deliver corrupt data. Every fragment of a
 * sequence must name the same destination. The bytes queued never exceed `maxBytes`.
 */
export class Reassembler {
  private parts: Buffer[] = [];
  private address: SocksAddress | undefined;
  private highest = 0;
  private bytes = 0;

  constructor(readonly maxBytes: number = MAX_UDP_PAYLOAD) {}

  /** True while a sequence is waiting for more fragments (the timer should be running). */
  get pending(): boolean {
    return this.parts.length > 0;
  }

  /** Payload bytes held in the queue right now. */
  get queuedBytes(): number {
    return this.bytes;
  }

  push(d: UdpDatagram): PushResult {
    const { position, last } = fragmentPosition(d.frag);
    let abandoned = 0;
    let reason: PushResult["reason"];
    // Lower than the highest position seen: the RFC says abandon. A repeated position is no better.
    // A standalone datagram (position 0) is lower than any, so it abandons a pending sequence too.
    if (this.pending && position <= this.highest) {
      abandoned = this.reset();
      reason = "out of order";
    }
    if (d.frag === 0) return { datagram: d, dropped: abandoned, reason, started: false };
    if (position === 0) return { dropped: abandoned + 1, reason: "invalid position", started: false };
    if (!this.pending) {
      if (position !== 1)
        return { dropped: abandoned + 1, reason: reason ?? "missing fragment", started: false };
      if (d.data.length > this.maxBytes)
        return { dropped: abandoned + 1, reason: "too large", started: false };
      const whole: UdpDatagram = { frag: 0, address: d.address, data: d.data };
      if (last) return { datagram: whole, dropped: abandoned, reason, started: false };
      this.parts = [d.data];
      this.bytes = d.data.length;
      this.address = d.address;
      this.highest = 1;
      return { dropped: abandoned, reason, started: true };
    }
    if (position !== this.highest + 1)
      return { dropped: 1 + this.reset(), reason: "missing fragment", started: false };
    if (!sameAddress(this.address!, d.address))
      return { dropped: 1 + this.reset(), reason: "destination changed", started: false };
    if (this.bytes + d.data.length > this.maxBytes)
      return { dropped: 1 + this.reset(), reason: "too large", started: false };
    this.parts.push(d.data);
    this.bytes += d.data.length;
    this.highest = position;
    if (!last) return { dropped: 0, started: false };
    return { datagram: this.complete(), dropped: 0, started: false };
  }

  /** The reassembly timer fired: abandon the queue. Returns how many fragments were dropped. */
  expire(): number {
    return this.reset();
  }

  private complete(): UdpDatagram {
    const datagram: UdpDatagram = { frag: 0, address: this.address!, data: Buffer.concat(this.parts) };
    this.reset();
    return datagram;
  }

  private reset(): number {
    const n = this.parts.length;
    this.parts = [];
    this.bytes = 0;
    this.highest = 0;
    this.address = undefined;
    return n;
  }
}

function sameAddress(a: SocksAddress, b: SocksAddress): boolean {
  return a.type === b.type && a.host === b.host && a.port === b.port;
}
