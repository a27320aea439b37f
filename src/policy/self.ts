import os from "node:os";
import { isUnspecifiedIp } from "../protocol/address.js";
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
  // The port first: it rules out almost every target without parsing its address.
  const mine = endpoints.filter((e) => e.port === port);
  if (mine.length === 0) return false;
  const target = policyIp(ip);
  if (!target) return false;
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
 * Wraps a policy with what no rule can override: nothing is relayed back into this server's own
 * listening sockets (a loop that would eat every session slot), and nothing goes to an
 * unspecified address (0.0.0.0/8, ::, mapped forms), which the kernel takes as this host.
 */
export function withSelfGuard(policy: Policy, endpoints: () => readonly Endpoint[]): Policy {
  const refuse = (ip: string, port: number, reason: string): Decision => ({
    verdict: "deny",
    rule: "self",
    reason: `${ip.includes(":") ? `[${ip}]` : ip}:${port} ${reason}`,
  });
  return {
    client: (c, o) => policy.client(c, o),
    command: (q, o) => policy.command(q, o),
    destination: (q, ip, o) => {
      const address = ip ?? (q.target.type === "domain" ? undefined : q.target.host);
      // A BIND peer arrives from its address: it is not a place we connect to.
      if (address !== undefined && q.command !== "bind") {
        if (isUnspecifiedIp(address)) {
          return refuse(
            address,
            q.target.port,
            "is an unspecified address, which means this host; it is never a destination",
          );
        }
        if (isSelf(address, q.target.port, endpoints())) {
          return refuse(address, q.target.port, "is one of this server's own listening sockets");
        }
      }
      return policy.destination(q, ip, o);
    },
  };
}
