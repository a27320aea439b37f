import type net from "node:net";
import { type ClientOptions, establish } from "./chain.js";
import { type ProxyChain, parseTarget, type Target } from "./proxy.js";

/**
 * Opens a TCP connection to `target` through a proxy or a chain of proxies (CONNECT).
 * Resolves once the last proxy reports success, with a socket that carries the target's bytes;
 * any bytes the target sent early are already queued on it. Rejects with a SocksError.
 *
 * @example
 * const socket = await connect("socks5h://alice:secret@127.0.0.1:1080", "example.com:443");
 */
export async function connect(
  proxy: ProxyChain,
  target: Target,
  options: ClientOptions = {},
): Promise<net.Socket> {
  const chain = await establish(proxy, "connect", parseTarget(target), options);
  chain.settle();
  return handOver(chain.io);
}

/**
 * Gives the caller the stream to use: the socket itself, with early bytes put back; or, when an
 * auth method encapsulates (GSSAPI), the encapsulating stream, which such a method must make
 * net.Socket-compatible.
 */
export function handOver(io: { stream: unknown; reader: { handBack(): void } }): net.Socket {
  io.reader.handBack();
  return io.stream as net.Socket;
}
