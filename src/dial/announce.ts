import dgram from "node:dgram";
import net from "node:net";
import os from "node:os";
import type { Config } from "../config/schema.js";
import type { PortRange } from "../config/units.js";
import { isLoopback, normalizeIp } from "../policy/addresses.js";
import { externalFor, isLocalAddress } from "./egress.js";

/**
 * The local address of the client's control connection, as the client reached it. It is never a
 * wildcard: a connected socket always has a concrete local address.
 */
export function controlLocalAddress(control: net.Socket): string {
  const local = control.localAddress;
  if (!local) throw new Error("the control connection has no local address (it already closed)");
  return normalizeIp(local);
}

export function familyOf(ip: string): 4 | 6 {
  // Without a colon it cannot be IPv6, and net.isIPv6's regular expression need not run.
  return ip.includes(":") && net.isIPv6(ip) ? 6 : 4;
}

/**
 * Where a BIND listener or UDP relay socket opens and what the reply announces. With an external
 * address of the family the client reached us on, that address is announced and opened on (the
 * one outbound connections leave from, docs/routes.md); when this host does not have it (the
 * public address of a NAT) the socket opens on the wildcard of its family instead. Otherwise
 * both are the local address the client reached us at.
 */
export function placement(config: Config, local: string): { listenHost: string; announceHost: string } {
  const external = externalFor(config.external, local);
  if (!external) return { listenHost: local, announceHost: local };
  const listenHost = isLocalAddress(external) ? external : familyOf(external) === 6 ? "::" : "0.0.0.0";
  return { listenHost, announceHost: external };
}

/**
 * Where a UDP relay opens for a client on this host that sends from the other family than its
 * control connection's (src/server/udp-source.ts): the external address of that family when one
 * is configured, as placement() would; otherwise the counterpart of the address the client
 * reached: the other loopback for a loopback, else an address of that family on the same
 * interface (not link-local: it would need a scope), else the client's own declared address.
 * Undefined when this host has none.
 */
export function placementIn(
  config: Config,
  local: string,
  family: 4 | 6,
  declared: string | undefined,
  interfaces = os.networkInterfaces(),
): { listenHost: string; announceHost: string } | undefined {
  if (familyOf(local) === family) return placement(config, local);
  const external = family === 6 ? config.external?.ipv6 : config.external?.ipv4;
  if (external) return placement(config, external);
  const counterpart = counterpartOf(local, family, interfaces) ?? declared;
  return counterpart ? { listenHost: counterpart, announceHost: counterpart } : undefined;
}

function counterpartOf(local: string, family: 4 | 6, interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>) {
  if (isLoopback(local)) return family === 6 ? "::1" : "127.0.0.1";
  const want = normalizeIp(local);
  for (const list of Object.values(interfaces)) {
    if (!list?.some((a) => normalizeIp(a.address.split("%")[0]!) === want)) continue;
    const other = list.find(
      (a) => familyOf(a.address) === family && !a.address.toLowerCase().startsWith("fe80:"),
    );
    if (other) return normalizeIp(other.address);
  }
  return undefined;
}

/**
 * Runs `open(port)` on ports of `range`, starting at a random one, until one is not in use.
 * Without a range the system picks (port 0).
 */
async function inRange<T>(range: PortRange | undefined, open: (port: number) => Promise<T>): Promise<T> {
  if (!range) return open(0);
  const size = range.high - range.low + 1;
  const start = Math.floor(Math.random() * size);
  for (let i = 0; i < size; i++) {
    try {
      return await open(range.low + ((start + i) % size));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    }
  }
  throw new Error(`every port of relayPorts ${range.low}-${range.high} is in use; widen the range`);
}

/** A TCP listener for BIND (allowHalfOpen, so the relay can pass half-closes on). */
export function listenTcp(host: string, range: PortRange | undefined): Promise<net.Server> {
  return inRange(
    range,
    (port) =>
      new Promise<net.Server>((resolve, reject) => {
        const server = net.createServer({ allowHalfOpen: true, noDelay: true });
        server.once("error", reject);
        server.listen({ host, port, exclusive: true, backlog: 8 }, () => {
          server.off("error", reject);
          resolve(server);
        });
      }),
  );
}

/** A bound UDP socket of the address's family (IPv6 sockets are IPv6 only). */
export function bindUdp(host: string, range: PortRange | undefined): Promise<dgram.Socket> {
  const type = familyOf(host) === 6 ? "udp6" : "udp4";
  return inRange(
    range,
    (port) =>
      new Promise<dgram.Socket>((resolve, reject) => {
        const socket = dgram.createSocket({ type, ipv6Only: type === "udp6" });
        const onError = (err: Error): void => {
          try {
            socket.close();
          } catch {
            // A socket whose bind failed may already count as closed.
          }
          reject(err);
        };
        socket.once("error", onError);
        socket.bind({ address: host, port, exclusive: true }, () => {
          socket.off("error", onError);
          resolve(socket);
        });
      }),
  );
}
