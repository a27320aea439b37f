import type { Duplex } from "node:stream";
import { addressOf, type SocksAddress } from "../protocol/address.js";
import { Reply, replyName, Socks4Reply } from "../protocol/errors.js";
import { encodeSocks4Reply } from "../protocol/socks4.js";
import { encodeReply } from "../protocol/socks5.js";
import type { SessionRecord } from "./context.js";

/** Sends the request's reply in the client's own dialect, so commands are version-blind. */
export interface Replier {
  readonly version: 4 | 5;
  /** A success reply carrying the bound address (sent twice for BIND). */
  success(bound: SocksAddress): void;
  /** A failure reply (a SOCKS5 REP code; SOCKS4 clients get 91), then the connection closes. */
  failure(reply: number): void;
}

/**
 * Ends the connection after a final reply. We send our FIN at once but wait briefly for the
 * peer's before destroying: destroying with unread input would turn the FIN into a reset and the
 * client could lose the reply.
 */
export function closeAfterReply(stream: Duplex, data?: Buffer): void {
  const destroy = (): void => {
    stream.destroy();
  };
  stream.on("end", destroy);
  stream.on("error", destroy);
  setTimeout(destroy, 2000).unref();
  stream.resume();
  stream.end(data);
}

// Classes rather than object literals of closures: a live session keeps its replier, and
// methods on a prototype cost nothing per session.
abstract class StreamReplier implements Replier {
  abstract readonly version: 4 | 5;

  constructor(
    protected readonly stream: Duplex,
    protected readonly record: SessionRecord,
  ) {}

  abstract success(bound: SocksAddress): void;
  abstract failure(reply: number): void;
}

class Socks5Replier extends StreamReplier {
  readonly version = 5;

  success(bound: SocksAddress): void {
    this.record.reply = Reply.SUCCEEDED;
    this.record.replyName = replyName(Reply.SUCCEEDED);
    this.stream.write(encodeReply(Reply.SUCCEEDED, bound));
  }

  failure(reply: number): void {
    this.record.reply = reply;
    this.record.replyName = replyName(reply);
    closeAfterReply(this.stream, encodeReply(reply));
  }
}

class Socks4Replier extends StreamReplier {
  readonly version = 4;

  success(bound: SocksAddress): void {
    this.record.reply = Socks4Reply.GRANTED;
    this.record.replyName = replyName(Socks4Reply.GRANTED, 4);
    // SOCKS4 replies carry IPv4 only; an IPv6 bound address is reported as 0.0.0.0.
    const v4 = bound.type === "ipv4" ? bound.host : "0.0.0.0";
    this.stream.write(encodeSocks4Reply(Socks4Reply.GRANTED, v4, bound.port));
  }

  failure(reply: number): void {
    this.record.reply = Socks4Reply.REJECTED;
    this.record.replyName = `${replyName(Socks4Reply.REJECTED, 4)} (${replyName(reply)})`;
    closeAfterReply(this.stream, encodeSocks4Reply(Socks4Reply.REJECTED));
  }
}

export const socks5Replier = (stream: Duplex, record: SessionRecord): Replier =>
  new Socks5Replier(stream, record);

export const socks4Replier = (stream: Duplex, record: SessionRecord): Replier =>
  new Socks4Replier(stream, record);

/** A local socket address as SOCKS reports it. */
export function boundAddress(host: string, port: number): SocksAddress {
  return addressOf(host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host, port);
}
