import { once } from "node:events";
import net from "node:net";
import { connect } from "../client/connect.js";
import { describeHop } from "../client/proxy.js";
import { ev } from "../observe/events.js";
import { createLogger, type LoggerOptions } from "../observe/logger.js";
import { formatAddress } from "../protocol/address.js";
import { chainFromFlags } from "./proxy-option.js";

/** Flags of `ferry forward`. */
export interface ForwardFlags extends LoggerOptions {
  proxy?: string[];
  timeout?: number;
  logLevel?: string;
  logFormat?: "json" | "pretty";
}

/** One `[BIND_ADDR:]LISTEN_PORT:HOST:PORT`; IPv6 addresses go in brackets. */
export interface ForwardSpec {
  bindHost: string;
  listenPort: number;
  host: string;
  port: number;
}

const PART = String.raw`(\[[^\]]+\]|[^:\[\]]+)`;
const SPEC = new RegExp(`^(?:${PART}:)?(\\d+):${PART}:(\\d+)$`);

/** Parses a forward like ssh -L's: `8080:example.com:80` or `127.0.0.1:8080:[::1]:80`. */
export function parseForwardSpec(spec: string): ForwardSpec {
  const m = SPEC.exec(spec);
  if (!m)
    throw new Error(
      `invalid forward "${spec}": expected [BIND_ADDR:]LISTEN_PORT:HOST:PORT, e.g. 8080:example.com:80`,
    );
  const unbracket = (s: string): string => (s.startsWith("[") ? s.slice(1, -1) : s);
  const listenPort = Number(m[2]);
  const port = Number(m[4]);
  if (listenPort > 65535 || port < 1 || port > 65535) throw new Error(`invalid port in forward "${spec}"`);
  return { bindHost: unbracket(m[1] ?? "127.0.0.1"), listenPort, host: unbracket(m[3]!), port };
}

/**
 * `ferry forward SPEC...`: listens on each local port and carries every connection to its target
 * through the chain, like `ssh -L`. Logs one line per listener and per connection (to stderr).
 * Runs until SIGINT/SIGTERM.
 */
export async function forwardTool(specs: string[], flags: ForwardFlags): Promise<number> {
  const log = createLogger({ level: flags.logLevel, format: flags.logFormat });
  const chain = chainFromFlags(flags.proxy);
  const via = chain.map(describeHop).join(" -> ");
  const servers: net.Server[] = [];
  let nextId = 1;
  for (const spec of specs.map(parseForwardSpec)) {
    const target = formatAddress({ host: spec.host, port: spec.port });
    const server = net.createServer({ allowHalfOpen: true }, (client) => {
      const id = nextId++;
      const from = formatAddress({ host: client.remoteAddress ?? "?", port: client.remotePort ?? 0 });
      const started = Date.now();
      client.on("error", () => {});
      client.pause();
      connect(
        chain,
        { host: spec.host, port: spec.port },
        { timeout: flags.timeout, allowHalfOpen: true },
      ).then(
        (remote) => {
          let up = 0;
          let down = 0;
          client.on("data", (c: Buffer) => {
            up += c.length;
          });
          remote.on("data", (c: Buffer) => {
            down += c.length;
          });
          remote.on("error", () => client.destroy());
          client.on("close", () => remote.destroy());
          remote.on("close", () => {
            client.destroy();
            log.info(
              ev("forward.end", { id, from, target, bytesUp: up, bytesDown: down, ms: Date.now() - started }),
              "forward closed",
            );
          });
          client.pipe(remote);
          remote.pipe(client);
          client.resume();
        },
        (err: Error & { hop?: number }) => {
          log.warn(
            ev("forward.fail", { id, from, target, hop: err.hop, error: err.message }),
            "forward failed",
          );
          client.destroy();
        },
      );
    });
    server.listen(spec.listenPort, spec.bindHost);
    try {
      await Promise.race([once(server, "listening"), once(server, "error").then(([e]) => Promise.reject(e))]);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      for (const s of servers) s.close();
      throw new Error(
        `cannot listen on ${formatAddress({ host: spec.bindHost, port: spec.listenPort })}: ${e.code ?? e.message}${e.code === "EADDRINUSE" ? "; pick another port" : ""}`,
      );
    }
    const a = server.address() as net.AddressInfo;
    log.info(
      ev("forward.listen", { listen: formatAddress({ host: a.address, port: a.port }), target, via }),
      "forwarding",
    );
    servers.push(server);
  }
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  log.flush?.();
  return 0;
}
