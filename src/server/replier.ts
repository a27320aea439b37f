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

export function socks5Replier(stream: Duplex, record: SessionRecord): Replier {
  return {
    version: 5,
    success(bound) {
      record.reply = Reply.SUCCEEDED;
      record.replyName = replyName(Reply.SUCCEEDED);
      stream.write(encodeReply(Reply.SUCCEEDED, bound));
    },
    failure(reply) {
      record.reply = reply;
      record.replyName = replyName(reply);
      closeAfterReply(stream, encodeReply(reply));
    },
  };
}

export function socks4Replier(stream: Duplex, record: SessionRecord): Replier {
  return {
    version: 4,
    success(bound) {
      record.reply = Socks4Reply.GRANTED;
      record.replyName = replyName(Socks4Reply.GRANTED, 4);
      // SOCKS4 replies carry IPv4 only; an IPv6 bound address is reported as 0.0.0.0.
      const v4 = bound.type === "ipv4" ? bound.host : "0.0.0.0";
      stream.write(encodeSocks4Reply(Socks4Reply.GRANTED, v4, bound.port));
    },
    failure(reply) {
      record.reply = Socks4Reply.REJECTED;
      record.replyName = `${replyName(Socks4Reply.REJECTED, 4)} (${replyName(reply)})`;
      closeAfterReply(stream, encodeSocks4Reply(Socks4Reply.REJECTED));
    },
  };
}

/** A local socket address as SOCKS reports it. */
export function boundAddress(host: string, port: number): SocksAddress {
  return addressOf(host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host, port);
}
