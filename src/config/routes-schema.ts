import net from "node:net";
import { z } from "zod";
import { durationSchema as duration } from "./fields.js";

/**
 * The route keys of the configuration: egress addresses, the address-family preference, named
 * upstream proxies and chains of them. Kept apart from schema.ts so that file only grows by a few
 * lines.
 */

const ipLiteral = z.string().refine((v) => net.isIP(v) !== 0, {
  message: "must be an IPv4 or IPv6 address, like 203.0.113.5 or 2001:db8::5 (or a list, one per family)",
});

/**
 * `external: 192.0.2.10` or `external: [192.0.2.10, "2001:db8::10"]`: at most one address per
 * family. Outbound connections, BIND listeners and UDP relays bind to the one of the target's
 * family, and BIND/UDP replies announce it.
 */
export const externalSchema = z.union([ipLiteral, z.array(ipLiteral).min(1).max(2)]).transform((v, ctx) => {
  const list = Array.isArray(v) ? v : [v];
  const out: { ipv4?: string; ipv6?: string } = {};
  for (const ip of list) {
    const family = net.isIPv6(ip) ? "ipv6" : "ipv4";
    if (out[family]) {
      ctx.addIssue({
        code: "custom",
        message: `two ${family === "ipv6" ? "IPv6" : "IPv4"} addresses (${out[family]}, ${ip}); give at most one per family`,
      });
      return z.NEVER;
    }
    out[family] = ip;
  }
  return out;
});
export type External = z.output<typeof externalSchema>;

/** Which address family a name is dialled in: `system` keeps the resolver's order (Happy Eyeballs). */
export const resolveSchema = z.enum(["system", "ipv4-first", "ipv6-first", "ipv4-only", "ipv6-only"]);
export type ResolvePreference = z.infer<typeof resolveSchema>;

/**
 * One upstream proxy. The URL scheme says the protocol: socks4, socks4a, socks5 (names resolved
 * here), socks5h (names resolved by the upstream) or http (HTTP CONNECT). Secrets are never
 * inline: `password: "${VAR}"` reads the environment, `passwordFile:` reads a file.
 */
export const upstreamSchema = z.strictObject({
  url: z.string(),
  /** SOCKS5 / HTTP user name, or the SOCKS4 USERID. `${VAR}` is expanded. */
  user: z.string().optional(),
  /** Must be exactly `${VAR}`: a literal password in the file is refused. */
  password: z.string().optional(),
  /** A file holding the password (trailing newline ignored); relative to the config file. */
  passwordFile: z.string().optional(),
});
export type UpstreamConfig = z.output<typeof upstreamSchema>;

const routeName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, {
  message: "names are letters, digits, '.', '_' and '-'",
});

/**
 * A hop of a chain: one upstream by name, or a group of them used in order with failover (a failed
 * member is skipped for `retryAfter`) or in turn (round-robin).
 */
export const hopSchema = z.union([
  routeName,
  z.strictObject({
    any: z.array(routeName).min(1),
    mode: z.enum(["failover", "round-robin"]).default("failover"),
    retryAfter: duration.default(30_000),
  }),
]);
export type HopConfig = z.output<typeof hopSchema>;

export const upstreamsSchema = z.record(routeName, upstreamSchema);
/** `chains: { outside: [dmz, corp] }`: the first hop is dialled from here, the last reaches the target. */
export const chainsSchema = z.record(routeName, z.array(hopSchema).min(1));
