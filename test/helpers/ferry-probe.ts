/**
 * A preload (`node --import <this file> bin/ferry serve ...`) for the soak and the live fuzzer.
 * It changes nothing in Ferry; it:
 * - reports the process's memory, open fds and event-loop delay every FERRY_PROBE_MS (default
 *   1000) as one stdout line `FERRY_PROBE {json}`;
 * - keeps the server's traffic on this machine: name lookups answer only for localhost and IP
 *   literals (a mutated DOMAINNAME must not reach the system resolver), and a TCP connect or a datagram to an address
 *   outside 127.0.0.0/8 and ::1 is refused and reported as `FERRY_EGRESS {json}`, which fails the
 *   run that sees it.
 */
import dgram from "node:dgram";
import { readdirSync } from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import net from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";

export const PROBE_PREFIX = "FERRY_PROBE ";
export const EGRESS_PREFIX = "FERRY_EGRESS ";

/** One sample, as the probe prints it. Sizes in bytes, delays in milliseconds. */
export interface ProbeSample {
  pid: number;
  t: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  fds: number;
  /** Event-loop delay over the interval since the last sample. */
  eldMean: number;
  eldP50: number;
  eldP99: number;
  eldMax: number;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost") return true;
  const kind = net.isIP(h);
  if (kind === 4) return h.startsWith("127.");
  if (kind === 6) return h === "::1" || h === "0:0:0:0:0:0:0:1" || h.startsWith("::ffff:127.");
  return false;
}

function installGuards(): void {
  const require = createRequire(import.meta.url);
  const notFound = (host: string): NodeJS.ErrnoException =>
    Object.assign(new Error(`getaddrinfo ENOTFOUND ${host} (ferry-probe: loopback only)`), {
      code: "ENOTFOUND",
      hostname: host,
    });
  type Answer = { address: string; family: number };
  const answers = (host: string, family?: number): Answer[] => {
    const h = host.toLowerCase().replace(/\.$/, "");
    const all: Answer[] =
      h === "localhost"
        ? [
            { address: "127.0.0.1", family: 4 },
            { address: "::1", family: 6 },
          ]
        : net.isIP(h) // a literal never reaches a resolver (0.0.0.0 for a bind, too)
          ? [{ address: h, family: net.isIP(h) }]
          : [];
    return family === 4 || family === 6 ? all.filter((a) => a.family === family) : all;
  };
  const optionsOf = (o: unknown): { all?: boolean; family?: number } =>
    typeof o === "number" ? { family: o } : ((o ?? {}) as { all?: boolean; family?: number });
  const dnsPromises = require("node:dns/promises") as { lookup: unknown };
  dnsPromises.lookup = async (host: string, o?: unknown) => {
    const { all, family } = optionsOf(o);
    const found = answers(host, family);
    if (found.length === 0) throw notFound(host);
    return all ? found : found[0];
  };
  const dns = require("node:dns") as { lookup: unknown };
  dns.lookup = (host: string, o: unknown, cb?: (...a: unknown[]) => void) => {
    const callback = (typeof o === "function" ? o : cb) as (...a: unknown[]) => void;
    const { all, family } = optionsOf(typeof o === "function" ? undefined : o);
    const found = answers(host, family);
    process.nextTick(() => {
      if (found.length === 0) callback(notFound(host));
      else if (all) callback(null, found);
      else callback(null, found[0]!.address, found[0]!.family);
    });
  };
  syncBuiltinESMExports();

  const report = (what: string, host: string, port: unknown): void => {
    process.stdout.write(`${EGRESS_PREFIX}${JSON.stringify({ what, host, port })}\n`);
  };
  const netConnect = net.Socket.prototype.connect;
  const normalize = (net as unknown as { _normalizeArgs?: (a: unknown[]) => unknown[] })._normalizeArgs;
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    const first = args[0];
    const options = (Array.isArray(first) ? first[0] : normalize ? normalize(args)[0] : first) as
      | { host?: string; port?: number; path?: string }
      | undefined;
    if (options && typeof options === "object" && !options.path) {
      const host = options.host ?? "localhost";
      if (!isLoopbackHost(host)) {
        report("tcp", host, options.port);
        throw new Error(`ferry-probe: refused a connect to ${host} (loopback only)`);
      }
    }
    return (netConnect as (...a: unknown[]) => net.Socket).apply(this, args);
  } as typeof netConnect;
  const udpSend = dgram.Socket.prototype.send;
  dgram.Socket.prototype.send = function (this: dgram.Socket, ...args: unknown[]) {
    // send(msg, [offset, length,] [port, [address]], [callback])
    const offsetForm = typeof args[1] === "number" && typeof args[2] === "number";
    const port = offsetForm ? args[3] : args[1];
    const address = offsetForm ? args[4] : args[2];
    if (typeof port === "number" && typeof address === "string" && !isLoopbackHost(address)) {
      report("udp", address, port);
      throw new Error(`ferry-probe: refused a datagram to ${address} (loopback only)`);
    }
    return (udpSend as (...a: unknown[]) => void).apply(this, args);
  } as typeof udpSend;
}

function startSampling(): void {
  const every = Number(process.env.FERRY_PROBE_MS ?? 1000);
  const eld = monitorEventLoopDelay({ resolution: 10 });
  eld.enable();
  const ms = (ns: number): number => Math.round(ns / 1e4) / 100;
  const sample = (): void => {
    const m = process.memoryUsage();
    let fds = -1;
    try {
      fds = readdirSync("/proc/self/fd").length - 1; // less the directory's own fd
    } catch {}
    const s: ProbeSample = {
      pid: process.pid,
      t: Date.now(),
      rss: m.rss,
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
      fds,
      eldMean: ms(Number.isNaN(eld.mean) ? 0 : eld.mean),
      eldP50: ms(eld.percentile(50)),
      eldP99: ms(eld.percentile(99)),
      eldMax: ms(eld.max),
    };
    eld.reset();
    process.stdout.write(`${PROBE_PREFIX}${JSON.stringify(s)}\n`);
  };
  sample(); // at once, so the launcher learns the pid
  setInterval(sample, every).unref();
}

// Only when preloaded into a server, not when a test imports isLoopbackHost or the types.
if (process.env.FERRY_PROBE === "1") {
  installGuards();
  startSampling();
}
