import http from "node:http";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import type { ClientOptions } from "./chain.js";
import { connect } from "./connect.js";
import type { ProxyChain } from "./proxy.js";

/** Options for {@link SocksAgent}: the stock agent's (keepAlive, maxSockets, ...) plus the client's. */
export interface SocksAgentOptions
  extends http.AgentOptions,
    Pick<ClientOptions, "timeout" | "localAddress"> {
  /** TLS options for `https:` requests (ca, rejectUnauthorized, ...), merged under each request's own. */
  tls?: tls.ConnectionOptions;
}

type ConnectOpts = http.ClientRequestArgs & tls.ConnectionOptions & { _defaultAgent?: { protocol?: string } };

/**
 * An `http.Agent` that opens its connections through a SOCKS proxy or chain, for `http` and
 * `https` alike: `https.get(url, { agent })` gets TLS to the target, over the proxy. Sockets are
 * pooled and kept alive like the stock agents do (keepAlive defaults to true, as Node's global
 * agent since Node 19). The proxy resolves names when the URL says so (socks5h, socks4a).
 *
 * @example
 * const agent = new SocksAgent("socks5h://127.0.0.1:1080");
 * https.get("https://example.com/", { agent }, (res) => res.pipe(process.stdout));
 */
export class SocksAgent extends http.Agent {
  private readonly chain: ProxyChain;
  private readonly tlsDefaults: tls.ConnectionOptions;
  private readonly clientOptions: ClientOptions;

  constructor(proxy: ProxyChain, options: SocksAgentOptions = {}) {
    const { tls: tlsDefaults, timeout, localAddress, ...agentOptions } = options;
    super({ keepAlive: true, ...agentOptions });
    this.chain = proxy;
    this.tlsDefaults = tlsDefaults ?? {};
    this.clientOptions = { timeout, localAddress };
    // http and https each check that an agent's protocol matches theirs; with none set, both
    // accept this agent, and each request says which it is (see createConnection).
    (this as unknown as { protocol: string | undefined }).protocol = undefined;
  }

  /** Pools http and https connections to the same host:port apart. */
  override getName(options?: http.ClientRequestArgs): string {
    const o = (options ?? {}) as ConnectOpts;
    return `${isHttps(o) ? "https" : "http"}:${super.getName(options)}:${o.servername ?? ""}`;
  }

  /** Called by the pool for each new connection; `callback` gets the socket or the error. */
  override createConnection(
    options: ConnectOpts,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | undefined {
    const host = options.hostname ?? options.host ?? "localhost";
    const port = Number(options.port ?? (isHttps(options) ? 443 : 80));
    connect(this.chain, { host, port }, this.clientOptions).then(
      (socket) => {
        if (!isHttps(options)) return callback?.(null, socket);
        const servername = options.servername ?? (isName(host) ? host : undefined);
        const secure = tls.connect({ ...this.tlsDefaults, ...pickTls(options), socket, servername, host });
        let settled = false;
        secure.once("secureConnect", () => {
          settled = true;
          callback?.(null, secure);
        });
        secure.once("error", (err) => {
          if (!settled) callback?.(err, secure);
        });
      },
      (err: Error) => callback?.(err, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

function isHttps(o: ConnectOpts): boolean {
  return (o.protocol ?? o._defaultAgent?.protocol) === "https:";
}

function isName(host: string): boolean {
  return !/^[\d.]+$/.test(host) && !host.includes(":");
}

/** The TLS fields a request may carry (https.request passes ca, cert, rejectUnauthorized, ...). */
function pickTls(o: ConnectOpts): tls.ConnectionOptions {
  const keys = [
    "ca",
    "cert",
    "key",
    "pfx",
    "passphrase",
    "rejectUnauthorized",
    "checkServerIdentity",
    "minVersion",
    "maxVersion",
    "ciphers",
    "ALPNProtocols",
    "session",
  ] as const;
  const out: Record<string, unknown> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out as tls.ConnectionOptions;
}
