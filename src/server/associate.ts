import dgram from "node:dgram";
import type net from "node:net";
import { GssEncapsulation, type GssProtector, unwrapDatagram, wrapDatagram } from "../auth/gssapi-stream.js";
import { bindableExternal } from "../dial/egress.js";
import { normalizeIp } from "../policy/addresses.js";
import type { RequestQuery } from "../policy/policy.js";
import { formatAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import { Reassembler } from "../protocol/fragments.js";
import { encodeUdpHeader, parseUdpDatagram, type UdpDatagram } from "../protocol/udp.js";
import { bindUdp, controlLocalAddress, familyOf, placement } from "./announce.js";
import type { ServerContext, SessionRecord } from "./context.js";
import { DnsCache } from "./dns-cache.js";
import type { Handshake } from "./handshake.js";
import { TokenBucket } from "./limits.js";
import { boundAddress } from "./replier.js";

/** Destinations remembered per association, so their replies are let back in. Oldest go first. */
const MAX_DESTINATIONS = 1024;

/**
 * UDP ASSOCIATE (RFC 1928 §7): open a relay socket the client reaches, reply with its address,
 * relay datagrams until the TCP control connection closes or the association is idle too long.
 */
export async function associateCommand(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
  control: net.Socket,
): Promise<void> {
  const limit = ctx.config.limits.associationsPerClient;
  const release = ctx.state.associations.acquire(record.client, limit);
  if (!release) {
    record.reason = `UDP association limit for ${record.client} reached (${limit}); close an association or raise limits.associationsPerClient`;
    hs.replier.failure(Reply.GENERAL_FAILURE);
    return;
  }
  const association = new UdpAssociation(hs, query, ctx, record);
  try {
    const local = controlLocalAddress(control);
    let { listenHost, announceHost } = placement(ctx.config, local);
    // The client sends from its own family: an external address of the other family is no use to it.
    if (familyOf(announceHost) !== familyOf(record.client)) {
      listenHost = local;
      announceHost = local;
    }
    let socket: dgram.Socket;
    try {
      socket = await bindUdp(listenHost, ctx.config.relayPorts);
    } catch (err) {
      record.reason = `cannot open a UDP relay socket on ${listenHost}: ${(err as Error).message}`;
      hs.replier.failure(Reply.GENERAL_FAILURE);
      return;
    }
    const bound = boundAddress(announceHost, socket.address().port);
    record.bound = formatAddress(bound);
    association.start(socket);
    hs.replier.success(bound);
    await association.untilEnd();
  } finally {
    association.close();
    release();
  }
}

type DropReason = string;

class UdpAssociation {
  private clientSocket: dgram.Socket | undefined;
  private readonly outbound = new Map<4 | 6, dgram.Socket>();
  private readonly clientIp: string;
  /** Fixed when the request named a port; otherwise the port the client last sent from. */
  private clientPort: number | undefined;
  private readonly fixedPort: boolean;
  private readonly reassembler = new Reassembler();
  private fragmentTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly dns = new DnsCache();
  private readonly destinations = new Set<string>();
  /** Datagrams waiting for a name lookup or for a socket to send them. */
  private queued = 0;
  private closed = false;
  private ended: (() => void) | undefined;
  /** GSSAPI integrity/confidentiality of the session protects every datagram too (RFC 1961 §5). */
  private readonly protector: GssProtector | undefined;

  constructor(
    private readonly hs: Handshake,
    private readonly query: RequestQuery,
    private readonly ctx: ServerContext,
    private readonly record: SessionRecord,
  ) {
    this.clientIp = record.client;
    // RFC 1928: DST.PORT is the port the client will send from, or zero when it does not know yet.
    this.fixedPort = hs.target.port !== 0;
    if (this.fixedPort) this.clientPort = hs.target.port;
    record.datagramsUp = 0;
    record.datagramsDown = 0;
    record.datagramsDropped = {};
    this.protector = hs.stream instanceof GssEncapsulation ? hs.stream.protector : undefined;
  }

  start(socket: dgram.Socket): void {
    this.clientSocket = socket;
    socket.on("message", (msg, rinfo) => this.fromClient(msg, rinfo));
    socket.on("error", () => {});
    const idle = this.ctx.config.timeouts.idle;
    if (idle > 0) {
      this.idleTimer = setTimeout(() => {
        this.record.reason = `idle for ${Math.round(idle / 1000)}s`;
        this.end();
      }, idle);
    }
  }

  /** Resolves when the control connection ends (or the association idles out). */
  untilEnd(): Promise<void> {
    const stream = this.hs.stream;
    // Nothing more is expected on the control connection; whatever comes is read and ignored.
    this.hs.reader.release();
    return new Promise((resolve) => {
      this.ended = resolve;
      stream.on("data", () => {});
      stream.on("end", () => this.end());
      stream.on("close", () => this.end());
      stream.on("error", () => this.end());
      if (this.hs.reader.peerEnded || stream.destroyed) this.end();
      else stream.resume();
    });
  }

  private end(): void {
    this.close();
    // Our FIN answers the client's; a control connection that is gone is simply destroyed.
    const stream = this.hs.stream;
    if (stream.readableEnded && !stream.destroyed) stream.end(() => stream.destroy());
    else stream.destroy();
    const ended = this.ended;
    this.ended = undefined;
    ended?.();
  }

  /** Frees every socket and timer at once: no datagram is relayed after this. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.fragmentTimer);
    this.reassembler.expire();
    for (const s of [this.clientSocket, ...this.outbound.values()]) {
      try {
        s?.close();
      } catch {
        // Already closed.
      }
    }
    this.outbound.clear();
  }

  private drop(reason: DropReason, n = 1): void {
    if (n <= 0) return;
    const counts = this.record.datagramsDropped!;
    counts[reason] = (counts[reason] ?? 0) + n;
  }

  private fromClient(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const source = normalizeIp(rinfo.address);
    if (source !== this.clientIp || (this.fixedPort && rinfo.port !== this.clientPort)) {
      this.drop("wrong source");
      return;
    }
    if (this.protector) {
      try {
        msg = unwrapDatagram(this.protector, msg);
      } catch {
        this.drop("GSSAPI check failed");
        return;
      }
    }
    if (!this.fixedPort) this.clientPort = rinfo.port;
    let datagram: UdpDatagram;
    try {
      datagram = parseUdpDatagram(msg);
    } catch {
      this.drop("malformed");
      return;
    }
    const result = this.reassembler.push(datagram);
    if (result.dropped > 0) this.drop(`fragment ${result.reason ?? "dropped"}`, result.dropped);
    if (result.started) this.startFragmentTimer();
    else if (!this.reassembler.pending) clearTimeout(this.fragmentTimer);
    if (result.datagram) void this.forward(result.datagram);
  }

  private startFragmentTimer(): void {
    clearTimeout(this.fragmentTimer);
    this.fragmentTimer = setTimeout(() => {
      this.drop("fragment timeout", this.reassembler.expire());
    }, this.ctx.config.timeouts.fragment);
  }

  private async forward(d: UdpDatagram): Promise<void> {
    if (this.queued >= this.ctx.config.limits.udpQueue) return this.drop("queue full");
    const query: RequestQuery = { ...this.query, target: d.address };
    if (this.ctx.policy.request(query).verdict === "deny") return this.drop("denied");
    if (this.hs.throttle && !TokenBucket.admit(this.hs.throttle.up, d.data.length)) {
      return this.drop("over bandwidth");
    }
    this.queued++;
    try {
      let candidates: string[];
      if (d.address.type === "domain") {
        try {
          candidates = await this.dns.lookup(d.address.host);
        } catch {
          return this.drop("unresolved");
        }
      } else {
        candidates = [d.address.host];
      }
      const ip = candidates.find((a) => this.ctx.policy.address(query, a).verdict === "allow");
      if (ip === undefined) return this.drop("denied");
      if (this.closed) return this.drop("closed");
      const socket = this.outboundSocket(familyOf(ip));
      const key = destinationKey(ip, d.address.port);
      this.destinations.delete(key);
      this.destinations.add(key);
      if (this.destinations.size > MAX_DESTINATIONS) {
        const oldest = this.destinations.values().next().value;
        if (oldest !== undefined) this.destinations.delete(oldest);
      }
      await new Promise<void>((resolve) => {
        socket.send(d.data, d.address.port, ip, (err) => {
          if (err) this.drop("send failed");
          else {
            this.record.datagramsUp! += 1;
            this.record.bytesUp += d.data.length;
            this.idleTimer?.refresh();
          }
          resolve();
        });
      });
    } catch {
      this.drop("send failed");
    } finally {
      this.queued--;
    }
  }

  /** Outbound sockets are separate from the client's: they must reach any destination, of either family. */
  private outboundSocket(family: 4 | 6): dgram.Socket {
    let socket = this.outbound.get(family);
    if (!socket) {
      const s = dgram.createSocket({ type: family === 6 ? "udp6" : "udp4", ipv6Only: family === 6 });
      s.on("message", (msg, rinfo) => this.fromDestination(msg, rinfo));
      s.on("error", () => {});
      // Datagrams leave from the external address of their family when this host has one
      // (docs/routes.md); otherwise send() binds the wildcard address and an ephemeral port.
      const egress = bindableExternal(this.ctx.config.external);
      const local = family === 6 ? egress.ipv6 : egress.ipv4;
      if (local) s.bind({ address: local, port: 0 });
      this.outbound.set(family, s);
      socket = s;
    }
    return socket;
  }

  private fromDestination(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const source = normalizeIp(rinfo.address);
    if (!this.destinations.has(destinationKey(source, rinfo.port))) return this.drop("unknown sender");
    if (this.clientPort === undefined) return this.drop("unknown sender");
    if (this.queued >= this.ctx.config.limits.udpQueue) return this.drop("queue full");
    if (this.hs.throttle && !TokenBucket.admit(this.hs.throttle.down, msg.length)) {
      return this.drop("over bandwidth");
    }
    let packet: Buffer = Buffer.concat([encodeUdpHeader(boundAddress(source, rinfo.port)), msg]);
    if (this.protector) {
      try {
        packet = wrapDatagram(this.protector, packet);
      } catch {
        return this.drop("too large for GSSAPI");
      }
    }
    this.queued++;
    this.clientSocket!.send(packet, this.clientPort, this.clientIp, (err) => {
      this.queued--;
      if (err) return this.drop("send failed");
      this.record.datagramsDown! += 1;
      this.record.bytesDown += msg.length;
      this.idleTimer?.refresh();
    });
  }
}

function destinationKey(ip: string, port: number): string {
  return `${normalizeIp(ip)}|${port}`;
}
