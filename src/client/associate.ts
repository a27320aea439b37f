import dgram from "node:dgram";
import { EventEmitter, once } from "node:events";
import type net from "node:net";
import { GssEncapsulation, type GssProtector, unwrapDatagram, wrapDatagram } from "../auth/gssapi-stream.js";
import { addressOf, formatAddress, isUnspecified, type SocksAddress } from "../protocol/address.js";
import { encodeUdpDatagram, encodeUdpHeader, fragmentPosition, parseUdpDatagram } from "../protocol/udp.js";
import { type ClientOptions, establish } from "./chain.js";
import { parseTarget, type Target } from "./proxy.js";

/** Options for {@link associate}. */
export interface AssociateOptions extends ClientOptions {
  /**
   * Split datagrams whose payload is larger than this many bytes into SOCKS5 fragments
   * (RFC 1928 §7; at most 127 fragments). Off by default: few proxies reassemble.
   */
  fragmentSize?: number;
  /** Milliseconds to wait for the rest of a fragmented incoming datagram (default 5000). */
  reassemblyTimeout?: number;
}

/** Events of a {@link UdpAssociation}. */
export interface UdpAssociationEvents {
  /** A datagram from `from`, relayed by the proxy. */
  message: [data: Buffer, from: SocksAddress];
  /** The association ended: the control connection closed or `close()` was called. */
  close: [];
  error: [err: Error];
}

/**
 * A UDP association through a SOCKS5 proxy: datagrams sent with `send()` leave the proxy's relay
 * for their target; answers arrive as `'message'` events. It lasts as long as the TCP control
 * connection; UDP goes straight to the last proxy's relay, whatever the chain.
 */
export class UdpAssociation extends EventEmitter<UdpAssociationEvents> {
  private closed = false;
  private reassembly: { from: string; position: number; parts: Buffer[]; timer: NodeJS.Timeout } | undefined;

  /** @internal Use {@link associate}. */
  constructor(
    private readonly control: net.Socket,
    private readonly udp: dgram.Socket,
    /** The proxy's relay, where datagrams go. */
    readonly relay: { host: string; port: number },
    private readonly options: AssociateOptions,
    /** Set when the hop agreed on GSSAPI integrity/confidentiality: datagrams are wrapped too. */
    private readonly protector?: GssProtector,
  ) {
    super();
    udp.on("message", (msg, rinfo) => this.receive(msg, rinfo));
    udp.on("error", (err) => this.emit("error", err));
    control.on("error", () => {});
    control.on("close", () => this.close());
    // The proxy sends nothing more on the control connection; read to notice its close.
    control.resume();
  }

  /** The local UDP address datagrams are sent from. */
  get local(): { address: string; port: number } {
    const a = this.udp.address();
    return { address: a.address, port: a.port };
  }

  /** Sends one datagram to `target` through the relay; fragments it when `fragmentSize` says so. */
  async send(data: Uint8Array | string, target: Target): Promise<void> {
    if (this.closed) throw new Error("the UDP association is closed");
    const address = parseTarget(target);
    const payload = typeof data === "string" ? Buffer.from(data) : Buffer.from(data);
    const size = this.options.fragmentSize;
    const packets: Buffer[] = [];
    if (size && size > 0 && payload.length > size) {
      const count = Math.ceil(payload.length / size);
      if (count > 127)
        throw new RangeError(`${payload.length} bytes need ${count} fragments; SOCKS5 allows 127`);
      for (let i = 0; i < count; i++) {
        const frag = (i + 1) | (i === count - 1 ? 0x80 : 0);
        packets.push(
          Buffer.concat([encodeUdpHeader(address, frag), payload.subarray(i * size, (i + 1) * size)]),
        );
      }
    } else {
      packets.push(encodeUdpDatagram({ frag: 0, address, data: payload }));
    }
    for (const plain of packets) {
      const p = this.protector ? wrapDatagram(this.protector, plain) : plain;
      await new Promise<void>((resolve, reject) =>
        this.udp.send(p, this.relay.port, this.relay.host, (err) => (err ? reject(err) : resolve())),
      );
    }
  }

  /** Ends the association: closes the control connection and the UDP socket. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reassembly) clearTimeout(this.reassembly.timer);
    this.control.destroy();
    this.udp.close();
    this.emit("close");
  }

  private receive(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // Only the relay speaks to us; anything else is noise or spoofing.
    if (
      rinfo.port !== this.relay.port ||
      addressOf(rinfo.address, 0).host !== addressOf(this.relay.host, 0).host
    )
      return;
    let d: ReturnType<typeof parseUdpDatagram>;
    try {
      d = parseUdpDatagram(this.protector ? unwrapDatagram(this.protector, msg) : msg);
    } catch {
      return;
    }
    if (d.frag === 0) {
      this.emit("message", d.data, d.address);
      return;
    }
    // RFC 1928 §7: positions rise; a lower one starts a new datagram; the high bit ends it.
    const { position, last } = fragmentPosition(d.frag);
    const from = formatAddress(d.address);
    const r = this.reassembly;
    if (!r || r.from !== from || position <= r.position) {
      if (r) clearTimeout(r.timer);
      const timer = setTimeout(() => {
        this.reassembly = undefined;
      }, this.options.reassemblyTimeout ?? 5000);
      timer.unref();
      this.reassembly = { from, position, parts: [d.data], timer };
    } else {
      r.position = position;
      r.parts.push(d.data);
    }
    if (last) {
      const done = this.reassembly!;
      clearTimeout(done.timer);
      this.reassembly = undefined;
      this.emit("message", Buffer.concat(done.parts), d.address);
    }
  }
}

/**
 * Opens a UDP association (SOCKS5 UDP ASSOCIATE) through the proxy or chain; the last hop must
 * speak SOCKS5. The request carries 0.0.0.0:0 ("not known yet"), which every proxy accepts.
 *
 * @example
 * const udp = await associate("socks5://127.0.0.1:1080");
 * udp.on("message", (data, from) => console.log(from, data));
 * await udp.send("ping", "127.0.0.1:5353");
 */
export async function associate(
  proxy: Parameters<typeof establish>[0],
  options: AssociateOptions = {},
): Promise<UdpAssociation> {
  const chain = await establish(proxy, "udp", addressOf("0.0.0.0", 0), options);
  chain.settle();
  const last = chain.hops[chain.hops.length - 1]!;
  let host = chain.bound.host;
  if (isUnspecified(chain.bound))
    host = chain.hops.length === 1 ? (chain.socket.remoteAddress ?? last.host) : last.host;
  const family = addressOf(host, 0).type === "ipv6" ? "udp6" : "udp4";
  const udp = dgram.createSocket(family);
  // Send from the address the control connection uses: proxies match datagrams to it.
  const local = chain.socket.localAddress;
  const sameFamily = local !== undefined && (addressOf(local, 0).type === "ipv6") === (family === "udp6");
  udp.bind(0, sameFamily ? local : family === "udp6" ? "::" : "0.0.0.0");
  await once(udp, "listening");
  chain.io.reader.release();
  const protector = chain.io.stream instanceof GssEncapsulation ? chain.io.stream.protector : undefined;
  return new UdpAssociation(chain.socket, udp, { host, port: chain.bound.port }, options, protector);
}
