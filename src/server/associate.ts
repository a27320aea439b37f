import type dgram from "node:dgram";
import type net from "node:net";
import { GssEncapsulation, type GssProtector, unwrapDatagram, wrapDatagram } from "../auth/gssapi-stream.js";
import { bindUdp, controlLocalAddress, familyOf, placement, placementIn } from "../dial/announce.js";
import { replyForError } from "../dial/errors.js";
import type { Decided } from "../dial/outbound.js";
import type { DatagramEvents, DatagramRouter } from "../dial/outbound-udp.js";
import { normalizeIp } from "../policy/addresses.js";
import type { RequestQuery } from "../policy/policy.js";
import { formatAddress, type SocksAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import { Reassembler } from "../protocol/fragments.js";
import { encodeUdpHeader, parseUdpDatagram, type UdpDatagram } from "../protocol/udp.js";
import { decideCommand, reportDecisions, takeLease } from "./admission.js";
import type { ServerContext, SessionRecord } from "./context.js";
import type { Handshake } from "./handshake.js";
import { associationsKey } from "./limit-store.js";
import { TokenBucket } from "./limits.js";
import type { Meter } from "./relay.js";
import { boundAddress } from "./replier.js";
import { type ClientSource, clientSource, fromClient } from "./udp-source.js";

/**
 * UDP ASSOCIATE (RFC 1928 §7): open a relay socket the client reaches, reply with its address,
 * relay datagrams until the TCP control connection closes or the association is idle too long.
 * Each datagram's destination is decided and carried by the outbound path (DatagramRouter),
 * direct or through an upstream, with the same limits, queue, fragments and records either way.
 */
export async function associateCommand(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
  signal: AbortSignal,
  control: net.Socket,
): Promise<void> {
  const decision = decideCommand(hs, query, ctx, record);
  if (!decision) return;
  const limit = ctx.config.limits.associationsPerClient;
  let taken = ctx.state.store.take([{ key: associationsKey(record.client), limit }]);
  if (taken instanceof Promise) taken = await taken;
  if ("refused" in taken) {
    record.reason = `UDP association limit for ${record.client} reached (${limit}); close an association or raise limits.associationsPerClient`;
    hs.replier.failure(Reply.GENERAL_FAILURE);
    return;
  }
  const release = taken.release;
  const lease = await takeLease(hs, query, decision, ctx, record);
  if (!lease) return release();
  const association = new UdpAssociation(hs, ctx, record);
  try {
    try {
      association.router = await ctx.outbound.associate(query, decision, association, {
        signal,
        timeoutMs: ctx.config.timeouts.connect,
      });
    } catch (err) {
      record.reason = (err as Error).message;
      hs.replier.failure(replyForError(err));
      return;
    }
    const local = controlLocalAddress(control);
    // The relay opens in the family the client sends from: the control connection's, or the
    // other one when a client on this host declared it (the npm socks client from ::1 over a
    // 127.0.0.1 control connection). Without an address of that family here, the declaration
    // is ignored and the client must send from the control connection's IP.
    let source = clientSource(query.target, record.client);
    let where = source.crossFamily
      ? placementIn(ctx.config, local, source.family, source.ip)
      : placement(ctx.config, local);
    if (!where) {
      source = { family: familyOf(record.client), ip: record.client, crossFamily: false };
      where = placement(ctx.config, local);
    }
    let { listenHost, announceHost } = where;
    // The client sends from its own family: an external address of the other family is no use to it.
    if (!source.crossFamily && familyOf(announceHost) !== source.family) {
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
    association.start(socket, source);
    hs.replier.success(bound);
    await association.untilEnd();
  } finally {
    association.close();
    lease.release();
    release();
  }
}

/** The client side of one association: its relay socket, its datagrams, its record. */
class UdpAssociation implements DatagramEvents {
  router: DatagramRouter | undefined;
  private clientSocket: dgram.Socket | undefined;
  /** Where the client sends from (src/server/udp-source.ts); its IP may be pinned by a datagram. */
  private source!: ClientSource;
  /**
   * The one port the client sends from: the request's DST.PORT, or, when that is zero, the port
   * of its first datagram. Anyone else on the client's address (another local user, another
   * host behind the same NAT) cannot ride on this association.
   */
  private clientPort: number | undefined;
  private readonly reassembler = new Reassembler();
  private fragmentTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Datagrams waiting for a decision (a name lookup) or for a socket to send them. */
  private queued = 0;
  private closed = false;
  private ended: (() => void) | undefined;
  /** GSSAPI integrity/confidentiality of the session protects every datagram too (RFC 1961 §5). */
  private readonly protector: GssProtector | undefined;

  constructor(
    private readonly hs: Handshake,
    private readonly ctx: ServerContext,
    private readonly record: SessionRecord,
  ) {
    // RFC 1928: DST.PORT is the port the client will send from, or zero when it does not know yet.
    if (hs.target.port !== 0) this.clientPort = hs.target.port;
    record.datagramsUp = 0;
    record.datagramsDown = 0;
    record.datagramsDropped = {};
    this.protector = hs.stream instanceof GssEncapsulation ? hs.stream.protector : undefined;
  }

  start(socket: dgram.Socket, source: ClientSource): void {
    this.clientSocket = socket;
    this.source = { ...source };
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
    this.router?.close();
    try {
      this.clientSocket?.close();
    } catch {
      // Already closed.
    }
  }

  drop(reason: string, n = 1): void {
    if (n <= 0) return;
    const counts = this.record.datagramsDropped!;
    counts[reason] = (counts[reason] ?? 0) + n;
  }

  decided(d: Decided): void {
    reportDecisions([d], this.ctx, this.record);
  }

  upstreamClosed(route: string, primary: boolean): void {
    if (!primary) return;
    if (!this.record.reason) this.record.reason = `the upstream route ${route} ended the UDP association`;
    this.end();
  }

  private fromClient(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const source = normalizeIp(rinfo.address);
    if (
      !fromClient(this.source, source) ||
      (this.clientPort !== undefined && rinfo.port !== this.clientPort)
    ) {
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
    let datagram: UdpDatagram;
    try {
      datagram = parseUdpDatagram(msg);
    } catch {
      this.drop("malformed");
      return;
    }
    // Pinned only by a datagram that is the client's own (well-formed, and GSSAPI-checked).
    this.source.ip ??= source;
    this.clientPort ??= rinfo.port;
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
    if (this.hs.throttle && !TokenBucket.admit(this.hs.throttle.up, d.data.length)) {
      return this.drop("over bandwidth");
    }
    if (this.hs.meter && this.overQuota(this.hs.meter, d.data.length)) return;
    this.queued++;
    try {
      const dropped = await this.router!.send(d.address, d.data);
      if (dropped) return this.drop(dropped);
      this.record.datagramsUp! += 1;
      this.record.bytesUp += d.data.length;
      this.idleTimer?.refresh();
    } catch {
      this.drop("send failed");
    } finally {
      this.queued--;
    }
  }

  /** Counts a datagram into the user's quota; the one that would go over ends the association. */
  private overQuota(meter: Meter, n: number): boolean {
    const over = meter.count(n);
    if (!over) return false;
    this.drop("over quota");
    this.record.reason = over;
    this.end();
    return true;
  }

  reply(from: SocksAddress, data: Buffer): void {
    if (this.closed) return;
    const clientIp = this.source.ip;
    if (this.clientPort === undefined || clientIp === undefined) return this.drop("unknown sender");
    if (this.queued >= this.ctx.config.limits.udpQueue) return this.drop("queue full");
    if (this.hs.throttle && !TokenBucket.admit(this.hs.throttle.down, data.length)) {
      return this.drop("over bandwidth");
    }
    if (this.hs.meter && this.overQuota(this.hs.meter, data.length)) return;
    let packet: Buffer = Buffer.concat([encodeUdpHeader(from), data]);
    if (this.protector) {
      try {
        packet = wrapDatagram(this.protector, packet);
      } catch {
        return this.drop("too large for GSSAPI");
      }
    }
    this.queued++;
    this.clientSocket!.send(packet, this.clientPort, clientIp, (err) => {
      this.queued--;
      if (err) return this.drop("send failed");
      this.record.datagramsDown! += 1;
      this.record.bytesDown += data.length;
      this.idleTimer?.refresh();
    });
  }
}
