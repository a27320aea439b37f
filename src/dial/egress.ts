import net from "node:net";
import os from "node:os";
import type { External } from "../config/routes-schema.js";
import { parseIp } from "../policy/addresses.js";

/**
 * True when this host can bind to `ip`: an address of one of its interfaces, or any loopback
 * address (Linux answers on the whole of 127.0.0.0/8, though only 127.0.0.1 is listed).
 */
export function isLocalAddress(ip: string, interfaces = os.networkInterfaces()): boolean {
  if (parseIp(ip)?.range() === "loopback") return true;
  const want = parseIp(ip)?.toString();
  for (const list of Object.values(interfaces)) {
    for (const a of list ?? []) if (parseIp(a.address.split("%")[0]!)?.toString() === want) return true;
  }
  return false;
}

/**
 * The external addresses sockets bind to: those this host has. Another one is a NAT's public
 * address, which replies announce but nothing here can bind.
 */
export function bindableExternal(external: External | undefined): External {
  const out: External = {};
  if (external?.ipv4 && isLocalAddress(external.ipv4)) out.ipv4 = external.ipv4;
  if (external?.ipv6 && isLocalAddress(external.ipv6)) out.ipv6 = external.ipv6;
  return out;
}

/** The configured external address of an address's family. */
export function externalFor(external: External | undefined, ip: string): string | undefined {
  return net.isIPv6(ip) ? external?.ipv6 : external?.ipv4;
}
