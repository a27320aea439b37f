import os from "node:os";
import type { Decision } from "./decide.js";
import type { Policy } from "./policy.js";
import { policyIp } from "./rules.js";

export interface Endpoint {
  host: string;
  port: number;
}

/** The addresses of this host's interfaces (what a 0.0.0.0 or :: listener answers on). */
export function interfaceAddresses(): string[] {
  return Object.values(os.networkInterfaces())
    .flat()
    .map((i) => i?.address)
    .filter((a): a is string => !!a);
}

/**
 * Would connecting to ip:port reach one of our own listening sockets? A listener on 0.0.0.0 or ::
 * answers on every local address, and connecting to 0.0.0.0 or :: reaches a local listener.
 */
export function isSelf(
  ip: string,
  port: number,
  endpoints: readonly Endpoint[],
  local: () => string[] = interfaceAddresses,
): boolean {
  const target = policyIp(ip);
  if (!target) return false;
  const mine = endpoints.filter((e) => e.port === port);
  if (mine.length === 0) return false;
  const t = target.toString();
  const targetUnspecified = target.range() === "unspecified";
  let locals: Set<string> | undefined;
  const isLocal = (): boolean => {
    if (target.range() === "loopback") return true;
    locals ??= new Set(local().map((a) => policyIp(a)?.toString() ?? a));
    return locals.has(t);
  };
  for (const e of mine) {
    const host = policyIp(e.host);
    if (!host) continue;
    if (host.toString() === t) return true;
    if (targetUnspecified) return true;
    if (host.range() === "unspecified" && isLocal()) return true;
  }
  return false;
}

/**
 * Wraps a policy so no request is ever relayed back into this server's own listening sockets (a
 * loop that would eat every session slot), whatever the rules say.
 */
export function withSelfGuard(policy: Policy, endpoints: () => readonly Endpoint[]): Policy {
  const refuse = (ip: string, port: number): Decision => ({
    verdict: "deny",
    rule: "self",
    reason: `${ip.includes(":") ? `[${ip}]` : ip}:${port} is one of this server's own listening sockets`,
  });
  return {
    client: (c, o) => policy.client(c, o),
    // Only CONNECT's request target is a place we connect to (BIND names the peer expected to
    // connect in, UDP the client's own address); datagrams are checked address by address.
    request: (q, o) => {
      if (
        q.command === "connect" &&
        q.target.type !== "domain" &&
        isSelf(q.target.host, q.target.port, endpoints())
      ) {
        return refuse(q.target.host, q.target.port);
      }
      return policy.request(q, o);
    },
    address: (q, ip, o) =>
      q.command !== "bind" && isSelf(ip, q.target.port, endpoints())
        ? refuse(ip, q.target.port)
        : policy.address(q, ip, o),
  };
}
