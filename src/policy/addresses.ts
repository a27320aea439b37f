import ipaddr from "ipaddr.js";

/** Parses an address, unwrapping IPv4-mapped IPv6 (what a dual-stack listener reports for v4 peers). */
export function parseIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  try {
    return ipaddr.process(text);
  } catch {
    return undefined;
  }
}

/** The address as v4 text when it is IPv4-mapped, otherwise unchanged. */
export function normalizeIp(text: string): string {
  return parseIp(text)?.toString() ?? text;
}

export function isLoopback(text: string): boolean {
  if (text === "localhost") return true;
  return parseIp(text)?.range() === "loopback";
}
