import type { ConnectionOptions } from "node:tls";
import { Agent, buildConnector } from "undici";
import type { ClientOptions } from "./chain.js";
import { connect } from "./connect.js";
import type { ProxyChain } from "./proxy.js";

/** Options for {@link SocksDispatcher}: undici Agent options plus the client's and TLS's. */
export interface SocksDispatcherOptions
  extends Omit<Agent.Options, "connect" | "tls">,
    Pick<ClientOptions, "timeout" | "localAddress"> {
  /** TLS options for `https:` origins (ca, rejectUnauthorized, ...). */
  tls?: ConnectionOptions;
}

/**
 * An undici Dispatcher whose connections go through a SOCKS proxy or chain, so
 * `fetch(url, { dispatcher })` (undici's fetch) and `request(url, { dispatcher })` work through
 * the proxy. It is an undici `Agent`: connections are pooled and kept alive per origin.
 *
 * @example
 * import { fetch } from "undici";
 * const dispatcher = new SocksDispatcher("socks5h://127.0.0.1:1080");
 * const res = await fetch("https://example.com/", { dispatcher });
 */
export class SocksDispatcher extends Agent {
  constructor(proxy: ProxyChain, options: SocksDispatcherOptions = {}) {
    const { tls, timeout, localAddress, ...agentOptions } = options;
    // undici's own connector does the TLS handshake over the socket we give it (httpSocket).
    const tlsConnector = buildConnector({ ...(tls ?? {}) });
    super({
      ...agentOptions,
      connect: (opts, callback) => {
        const port = Number(opts.port) || (opts.protocol === "https:" ? 443 : 80);
        connect(proxy, { host: opts.hostname, port }, { timeout, localAddress }).then(
          (socket) => {
            if (opts.protocol !== "https:") return callback(null, socket);
            tlsConnector({ ...opts, httpSocket: socket }, callback);
          },
          (err: Error) => callback(err, null),
        );
      },
    });
  }
}
