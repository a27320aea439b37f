import net from "node:net";
import { StreamReader } from "../io/reader.js";
import { addressOf, type SocksAddress } from "../protocol/address.js";
import type { CommandName } from "../protocol/socks5.js";
import { SocksError } from "./errors.js";
import { type HopIo, hopRequest } from "./handshake.js";
import { describeHop, type ProxyChain, type ProxyHop, parseChain } from "./proxy.js";
import { lateTlsFailure, startHopTls } from "./tls-hop.js";

/** Options every client call takes. */
export interface ClientOptions {
  /**
   * Milliseconds for reaching the first proxy plus every handshake of the chain (not for the
   * data that follows). Default 30 000; 0 waits forever.
   */
  timeout?: number;
  /** Aborts the connection attempt; a later abort does nothing. */
  signal?: AbortSignal;
  /** Local address to connect to the first proxy from. */
  localAddress?: string;
  /** Keep the socket writable after the far side ends its half (default false, as net.connect). */
  allowHalfOpen?: boolean;
}

/**
 * Sockets the client library opens to proxies carry this mark, so the `ferry run` preload hook
 * sends them direct instead of through the proxy again.
 */
export const DIRECT = Symbol.for("ferry.client.direct");

/** An established chain: the socket to the first proxy and the stream the last hop answered on. */
export interface Established {
  socket: net.Socket;
  io: HopIo;
  /** BND.ADDR/BND.PORT of the last hop's (first) reply. */
  bound: SocksAddress;
  hops: ProxyHop[];
  /** Stops the handshake timer and abort listener (call once the caller has what it waits for). */
  settle(): void;
  /** Runs a further step (BIND's second reply) under the same timeout and abort. */
  guard<T>(step: Promise<T>, stage: "accept"): Promise<T>;
}

/**
 * Connects to the first proxy and runs each hop's handshake through the ones before it: hops
 * 0..n-2 CONNECT to the next proxy, the last hop runs `command` for `target`.
 */
export async function establish(
  proxy: ProxyChain,
  command: CommandName,
  target: SocksAddress,
  options: ClientOptions = {},
): Promise<Established> {
  const hops = parseChain(proxy);
  let current = 0;
  const first = hops[0]!;
  const socket = new net.Socket({ allowHalfOpen: options.allowHalfOpen ?? false });
  (socket as unknown as Record<symbol, boolean>)[DIRECT] = true;

  const aborter = new AbortController();
  const timeoutMs = options.timeout ?? 30_000;
  const stopAll = (reason: SocksError): void => {
    aborter.abort(reason);
    socket.destroy();
  };
  const makeStop = (stage: "timeout" | "aborted", cause?: unknown): SocksError => {
    const hop = hops[current]!;
    const msg =
      stage === "timeout"
        ? `timed out after ${timeoutMs} ms at proxy #${current + 1} (${describeHop(hop)})`
        : `aborted at proxy #${current + 1} (${describeHop(hop)})`;
    return new SocksError(msg, { stage, hop: current, proxy: describeHop(hop), version: hop.version, cause });
  };
  let timer = timeoutMs > 0 ? setTimeout(() => stopAll(makeStop("timeout")), timeoutMs) : undefined;
  const onAbort = (): void => stopAll(makeStop("aborted", options.signal?.reason));
  if (options.signal?.aborted) throw makeStop("aborted", options.signal.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const settle = (): void => {
    clearTimeout(timer);
    timer = undefined;
    options.signal?.removeEventListener("abort", onAbort);
  };
  const guard = async <T>(step: Promise<T>): Promise<T> => {
    try {
      return await step;
    } catch (err) {
      if (aborter.signal.aborted) throw aborter.signal.reason;
      throw err;
    }
  };

  try {
    socket.connect({ host: first.host, port: first.port, localAddress: options.localAddress });
    await guard(
      new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", (e: NodeJS.ErrnoException) =>
          reject(
            new SocksError(
              `cannot reach proxy #1 (${describeHop(first)}): ${e.code ?? e.message}; is the proxy running and the address right?`,
              { stage: "connect", hop: 0, proxy: describeHop(first), version: first.version, cause: e },
            ),
          ),
        );
      }),
    );
    socket.setNoDelay(true);
    let io: HopIo = { stream: socket, reader: new StreamReader(socket) };
    let bound: SocksAddress = target;
    for (let i = 0; i < hops.length; i++) {
      current = i;
      const hop = hops[i]!;
      const next = hops[i + 1];
      if (hop.tls) io = await guard(startHopTls(io, { ...hop, tls: hop.tls }, i));
      const step = next
        ? hopRequest(io, hop, i, "connect", addressOf(next.host, next.port))
        : hopRequest(io, hop, i, command, target);
      const done = await guard(step).catch((err: unknown) => {
        throw (hop.tls && lateTlsFailure(io, hop, i, err)) || err;
      });
      io = done.io;
      bound = done.bound;
    }
    return {
      socket,
      io,
      bound,
      hops,
      settle,
      guard: (step) => guard(step),
    };
  } catch (err) {
    settle();
    socket.destroy();
    throw err;
  }
}
