import dgram from "node:dgram";
import type { UdpAssociation } from "../client/associate.js";
import { normalizeIp } from "../policy/addresses.js";
import type { RequestQuery } from "../policy/policy.js";
import { addressOf, type SocksAddress } from "../protocol/address.js";
import { familyOf } from "./announce.js";
import type { DialOptions } from "./dialer.js";
import { DnsCache } from "./dns-cache.js";
import { bindableExternal } from "./egress.js";
import type { Resolved } from "./family.js";
import { type Admitted, type Decided, type Outbound, Refused } from "./outbound.js";

/** Destinations remembered per association, so their replies are let back in. Oldest go first. */
const MAX_DESTINATIONS = 1024;

export interface DatagramEvents {
  /** A datagram from a destination, for the client. */
  reply(from: SocksAddress, data: Buffer): void;
  /** A datagram not passed on, by reason. */
  drop(reason: string): void;
  /** Every decision about a datagram's destination, for the session's decision events. */
  decided(d: Decided): void;
  /** An upstream association ended; `primary` when it was the command's own route. */
  upstreamClosed(route: string, primary: boolean): void;
}

/**
 * Where one UDP association's datagrams go. Each datagram's destination is decided by the
 * outbound path like a CONNECT target (src/policy/admit.ts), and leaves through the route of the
 * rule that admits it: straight from a socket of its family, or through a UDP association on an
 * upstream route's last hop, opened the first time that route is needed. Replies come back only
 * from destinations sent to (direct) or through our own upstream association.
 */
export class DatagramRouter {
  private readonly sockets = new Map<4 | 6, dgram.Socket>();
  private readonly destinations = new Set<string>();
  private readonly upstreams = new Map<string, Promise<UdpAssociation>>();
  private readonly dns: DnsCache;
  private primary: string | undefined;
  private closed = false;

  constructor(
    private readonly outbound: Outbound,
    private readonly query: RequestQuery,
    private readonly events: DatagramEvents,
  ) {
    // In front of the server's resolver: remembers failures too, so a stream of datagrams to a
    // name that does not resolve costs one lookup, not one per datagram.
    const options = { client: query.client, timeoutMs: outbound.config.timeouts.connect };
    this.dns = new DnsCache(64, 60_000, 10_000, async (host) =>
      (await outbound.lookup(host, options)).map((a) => a.address),
    );
  }

  private readonly lookup = async (host: string): Promise<Resolved[]> =>
    (await this.dns.lookup(host)).map((address) => ({ address, family: familyOf(address) }));

  /** Opens the command's own route now, so an upstream that refuses UDP fails the request itself. */
  async open(route: string | undefined, options: DialOptions): Promise<void> {
    const chain = this.outbound.chain(route);
    if (!chain || route === undefined) return;
    this.primary = route;
    await this.upstream(route, options);
  }

  /** Decides and sends one datagram; resolves with why it was dropped, or undefined once sent. */
  async send(to: SocksAddress, data: Buffer): Promise<string | undefined> {
    let admitted: Admitted;
    try {
      admitted = await this.outbound.admit({ ...this.query, target: to }, {}, this.lookup);
    } catch (err) {
      if (!(err instanceof Refused)) return "unresolved";
      for (const d of err.decided) this.events.decided(d);
      return "denied";
    }
    for (const d of admitted.decided) this.events.decided(d);
    if (this.closed) return "closed";
    const via = admitted.decision.route;
    if (this.outbound.chain(via) && via !== undefined) {
      let upstream: UdpAssociation;
      try {
        upstream = await this.upstream(via, {});
      } catch {
        return "upstream failed";
      }
      try {
        await upstream.send(data, { host: admitted.target.host, port: admitted.target.port });
      } catch {
        return "send failed";
      }
      return undefined;
    }
    const ip = admitted.addresses![0]!.address;
    const socket = this.socketFor(familyOf(ip));
    const key = destinationKey(ip, to.port);
    this.destinations.delete(key);
    this.destinations.add(key);
    if (this.destinations.size > MAX_DESTINATIONS) {
      const oldest = this.destinations.values().next().value;
      if (oldest !== undefined) this.destinations.delete(oldest);
    }
    return new Promise((resolve) => {
      socket.send(data, to.port, ip, (err) => resolve(err ? "send failed" : undefined));
    });
  }

  /** Frees every socket and upstream association: nothing is sent or received after this. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets.values()) {
      try {
        s.close();
      } catch {
        // Already closed.
      }
    }
    this.sockets.clear();
    for (const u of this.upstreams.values())
      u.then(
        (a) => a.close(),
        () => {},
      );
    this.upstreams.clear();
  }

  private upstream(route: string, options: DialOptions): Promise<UdpAssociation> {
    let opened = this.upstreams.get(route);
    if (!opened) {
      const chain = this.outbound.chain(route)!;
      opened = chain.associate(options).then(
        (a) => {
          if (this.closed) a.close();
          a.on("message", (data: Buffer, from: SocksAddress) => {
            if (!this.closed) this.events.reply(from, data);
          });
          a.on("error", () => {});
          a.once("close", () => {
            if (this.upstreams.get(route) === opened) this.upstreams.delete(route);
            if (!this.closed) this.events.upstreamClosed(route, route === this.primary);
          });
          return a;
        },
        (err) => {
          // The next datagram for this route tries again.
          this.upstreams.delete(route);
          throw chain.failure(err);
        },
      );
      this.upstreams.set(route, opened);
    }
    return opened;
  }

  /** Outbound sockets are apart from the client's: they must reach any destination, of either family. */
  private socketFor(family: 4 | 6): dgram.Socket {
    let socket = this.sockets.get(family);
    if (!socket) {
      const s = dgram.createSocket({ type: family === 6 ? "udp6" : "udp4", ipv6Only: family === 6 });
      s.on("message", (msg, rinfo) => this.fromDestination(msg, rinfo));
      s.on("error", () => {});
      // Datagrams leave from the external address of their family when this host has one
      // (docs/routes.md); otherwise send() binds the wildcard address and an ephemeral port.
      const egress = bindableExternal(this.outbound.config.external);
      const local = family === 6 ? egress.ipv6 : egress.ipv4;
      if (local) s.bind({ address: local, port: 0 });
      this.sockets.set(family, s);
      socket = s;
    }
    return socket;
  }

  private fromDestination(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const source = normalizeIp(rinfo.address);
    if (!this.destinations.has(destinationKey(source, rinfo.port))) return this.events.drop("unknown sender");
    this.events.reply(addressOf(source, rinfo.port), msg);
  }
}

function destinationKey(ip: string, port: number): string {
  return `${normalizeIp(ip)}|${port}`;
}
