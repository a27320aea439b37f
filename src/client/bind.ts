import type net from "node:net";
import { addressOf, isUnspecified, type SocksAddress } from "../protocol/address.js";
import { type ClientOptions, establish } from "./chain.js";
import { SocksError } from "./errors.js";
import { readSocks4Reply, readSocks5Reply } from "./handshake.js";
import { describeHop, type ProxyChain, parseTarget, type Target } from "./proxy.js";

/** Options for {@link bind}. */
export interface BindOptions extends ClientOptions {
  /**
   * The peer expected to connect (DST.ADDR of the request; proxies may check it). Default
   * `0.0.0.0:0`, "any peer".
   */
  peer?: Target;
  /** Milliseconds to wait for the peer after the first reply; 0 (default) leaves it to the proxy. */
  acceptTimeout?: number;
}

/** An incoming connection accepted by the proxy on our behalf. */
export interface BindAccepted {
  /** Carries the peer's bytes; early bytes are already queued on it. */
  socket: net.Socket;
  /** The peer's address as the proxy reported it (second reply). */
  peer: SocksAddress;
}

/** A listening BIND: where the peer should connect, and the connection once it does. */
export interface BindResult {
  /** Host the proxy listens on for us (first reply); the proxy's own address when it sent 0.0.0.0. */
  address: string;
  port: number;
  /** The first reply's address exactly as sent. */
  bound: SocksAddress;
  /** Resolves on the second reply; rejects with a SocksError when the proxy gives up or refuses. */
  accepted: Promise<BindAccepted>;
  /** Gives up waiting and closes the control connection. */
  close(): void;
}

/**
 * Asks the last proxy of the chain to listen for one incoming connection (BIND, as FTP's active
 * mode needs). Resolves after the first reply with the address to hand to the peer.
 *
 * @example
 * const b = await bind("socks5://127.0.0.1:1080");
 * tellPeer(b.address, b.port);
 * const { socket, peer } = await b.accepted;
 */
export async function bind(proxy: ProxyChain, options: BindOptions = {}): Promise<BindResult> {
  const peer = options.peer === undefined ? addressOf("0.0.0.0", 0) : parseTarget(options.peer);
  const chain = await establish(proxy, "bind", peer, options);
  chain.settle();
  const index = chain.hops.length - 1;
  const hop = chain.hops[index]!;
  let address = chain.bound.host;
  if (isUnspecified(chain.bound)) address = index === 0 ? (chain.socket.remoteAddress ?? hop.host) : hop.host;

  const { socket, io } = chain;
  let timer: NodeJS.Timeout | undefined;
  const second =
    hop.version === 4 ? readSocks4Reply(io, hop, index, "accept") : readSocks5Reply(io, hop, index, "accept");
  const waits: Promise<SocksAddress>[] = [second];
  if (options.acceptTimeout && options.acceptTimeout > 0) {
    const ms = options.acceptTimeout;
    waits.push(
      new Promise((_, reject) => {
        timer = setTimeout(() => {
          socket.destroy();
          reject(
            new SocksError(`no peer connected within ${ms} ms to ${address}:${chain.bound.port}`, {
              stage: "timeout",
              hop: index,
              proxy: describeHop(hop),
              version: hop.version,
            }),
          );
        }, ms);
      }),
    );
  }
  const accepted = Promise.race(waits).then(
    (peerAddress) => {
      clearTimeout(timer);
      io.reader.handBack();
      return { socket: io.stream as net.Socket, peer: peerAddress };
    },
    (err) => {
      clearTimeout(timer);
      socket.destroy();
      throw err;
    },
  );
  // A caller who never awaits `accepted` must not crash the process with an unhandled rejection.
  accepted.catch(() => {});
  return {
    address,
    port: chain.bound.port,
    bound: chain.bound,
    accepted,
    close: () => {
      clearTimeout(timer);
      socket.destroy();
    },
  };
}
