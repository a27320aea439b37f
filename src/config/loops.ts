import { lookup } from "node:dns/promises";
import net from "node:net";
import os from "node:os";
import { normalizeIp, parseIp } from "../policy/addresses.js";
import type { HostPort } from "./units.js";

export interface Loop {
  upstream: { name: string; host: string; port: number };
  /** The listen address it would reach, as configured. */
  listen: string;
}

/** How long a name may take to resolve at load before it is given the benefit of the doubt. */
const LOOKUP_LIMIT_MS = 3000;

/**
 * Upstreams that are really this server: same port as a listen address, and an address that
 * listener accepts on (the same address, or any local one when it listens on 0.0.0.0 or ::).
 * Names on both sides are resolved. A name that does not resolve now cannot be judged and passes;
 * every hop is checked, not only the first, because on one host they are all our neighbours.
 */
export async function findLoops(
  listen: HostPort[],
  upstreams: { name: string; host: string; port: number }[],
  localAddresses: () => Set<string> = interfaceAddresses,
): Promise<Loop[]> {
  const loops: Loop[] = [];
  const listens = await Promise.all(
    listen.filter((l) => l.port !== 0).map(async (l) => ({ l, ips: await resolveAll(l.host) })),
  );
  if (listens.length === 0) return loops;
  let local: Set<string> | undefined;
  for (const u of upstreams) {
    const targets = await resolveAll(u.host);
    const hit = listens.find(({ l, ips }) => {
      if (l.port !== u.port) return false;
      return targets.some((t) =>
        ips.some((ip) => {
          if (ip === t) return true;
          local ??= localAddresses();
          const tIsLocal = local.has(t) || isLoopbackOrUnspecified(t);
          if (ip === "0.0.0.0") return net.isIPv4(t) && tIsLocal;
          // Linux listens dual-stack on :: by default, so it takes IPv4 connections as well.
          if (ip === "::") return tIsLocal;
          // Connecting to 0.0.0.0 or :: reaches the local host.
          if (t === "0.0.0.0" || t === "::") return local.has(ip) || isLoopbackOrUnspecified(ip);
          return false;
        }),
      );
    });
    if (hit) {
      const h = hit.l.host.includes(":") ? `[${hit.l.host}]` : hit.l.host;
      loops.push({ upstream: u, listen: `${h}:${hit.l.port}` });
    }
  }
  return loops;
}

async function resolveAll(host: string): Promise<string[]> {
  if (net.isIP(host)) return [normalizeIp(host)];
  try {
    const found = await Promise.race([
      lookup(host, { all: true }),
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error("timeout")), LOOKUP_LIMIT_MS).unref(),
      ),
    ]);
    return found.map((a) => normalizeIp(a.address));
  } catch {
    return [];
  }
}

function isLoopbackOrUnspecified(ip: string): boolean {
  const range = parseIp(ip)?.range();
  return range === "loopback" || range === "unspecified";
}

function interfaceAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) out.add(normalizeIp(a.address.split("%")[0]!));
  }
  return out;
}
