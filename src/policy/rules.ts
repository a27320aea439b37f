import ipaddr from "ipaddr.js";
import type { ResolvePreference } from "../config/routes-schema.js";
import type { CommandName } from "../protocol/socks5.js";

/** An address range: `10.0.0.0/8`, `fd00::/8`, or one address (a /32 or /128). */
export interface Cidr {
  text: string;
  net: ipaddr.IPv4 | ipaddr.IPv6;
  bits: number;
}

/** One entry of `to:`: an address range, an exact name, or `*.example.com` (any name below it). */
export type Destination =
  | ({ kind: "cidr" } & Cidr)
  | { kind: "name"; text: string; name: string }
  | { kind: "wildcard"; text: string; suffix: string };

export interface PortRange {
  text: string;
  from: number;
  to: number;
}

/** What a rule matches; a key left out matches anything. Lists match if any entry does. */
export interface RuleBody {
  from?: Cidr[];
  users?: string[];
  groups?: string[];
  methods?: string[];
  versions?: (4 | 5)[];
  commands?: CommandName[];
  to?: Destination[];
  ports?: PortRange[];
  /** Emit a decision event (logged at once) whenever this rule decides. */
  log: boolean;
  /** Bytes per second, each direction, shared by every session this rule admits. */
  bandwidth?: number;
  /** Sessions this rule may admit at once. */
  sessions?: number;
  /** The route of what this rule admits: an upstream or chain name, or `direct`. */
  via?: string;
  /** Address-family preference for what this rule admits. */
  resolve?: ResolvePreference;
}

export interface Rule extends RuleBody {
  action: "allow" | "deny";
  stage: "clients" | "rules";
  index: number;
  /** Where the rule is written, when it came from a file. */
  file?: string;
  line?: number;
}

/** `rules[2] (ferry.yaml:12)`: how logs and `ferry check` name a rule. */
export function ruleLabel(rule: Pick<Rule, "stage" | "index" | "file" | "line">): string {
  const id = `${rule.stage}[${rule.index}]`;
  return rule.line ? `${id} (${rule.file ? `${shortFile(rule.file)}:` : "line "}${rule.line})` : id;
}

function shortFile(file: string): string {
  const slash = file.lastIndexOf("/");
  return slash >= 0 ? file.slice(slash + 1) : file;
}

/** Parses an address as policy sees it: IPv4-mapped IPv6 becomes IPv4, so ::ffff:10.0.0.1 is 10.0.0.1. */
export function policyIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  try {
    return ipaddr.process(bare);
  } catch {
    return undefined;
  }
}

export function parseCidr(text: string): Cidr {
  const t = text.trim();
  if (t.includes("/")) {
    let net: ipaddr.IPv4 | ipaddr.IPv6;
    let bits: number;
    try {
      [net, bits] = ipaddr.parseCIDR(t);
    } catch {
      throw new Error(`"${text}" is not an address range; write it like 10.0.0.0/8 or fd00::/8`);
    }
    if (net.kind() === "ipv6" && (net as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
      return { text: t, net: (net as ipaddr.IPv6).toIPv4Address(), bits: bits - 96 };
    }
    return { text: t, net, bits };
  }
  const ip = policyIp(t);
  if (!ip) throw new Error(`"${text}" is not an IP address or range; write it like 192.0.2.1 or 10.0.0.0/8`);
  return { text: t, net: ip, bits: ip.kind() === "ipv4" ? 32 : 128 };
}

export function inCidr(ip: ipaddr.IPv4 | ipaddr.IPv6, c: Cidr): boolean {
  return ip.kind() === c.net.kind() && ip.match(c.net, c.bits);
}

const LABEL = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/;

/** Lower case without the trailing dot, the form names are compared in. */
export function canonicalName(name: string): string {
  const lower = name.trim().toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

export function parseDestination(value: string | number): Destination {
  const text = String(value).trim();
  if (text === "*" || text === "*.*") {
    throw new Error(`"${text}" is not a destination; leave out "to" to match every destination`);
  }
  if (/^[\d.]+(\/\d+)?$/.test(text) || text.includes(":")) return { kind: "cidr", ...parseCidr(text) };
  const wildcard = text.startsWith("*.");
  const name = canonicalName(wildcard ? text.slice(2) : text);
  if (name === "" || !name.split(".").every((l) => LABEL.test(l))) {
    throw new Error(
      `"${text}" is not a destination; write an address (10.0.0.1), a range (10.0.0.0/8), a name (example.com) or a wildcard (*.example.com)`,
    );
  }
  return wildcard ? { kind: "wildcard", text, suffix: `.${name}` } : { kind: "name", text, name };
}

export function parsePortRange(value: string | number): PortRange {
  const text = String(value).trim();
  const m = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(text);
  const from = m ? Number(m[1]) : Number.NaN;
  const to = m ? Number(m[2] ?? m[1]) : Number.NaN;
  if (!m || from > 65535 || to > 65535 || from > to) {
    throw new Error(`"${text}" is not a port or port range; write it like 443 or "8000-8999"`);
  }
  return { text, from, to };
}
