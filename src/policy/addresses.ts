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

/**
 * 0.0.0.0/8, :: and their IPv4-mapped forms: "this host" to the kernel, so connecting to one
 * reaches a local listener. Never a valid destination, whatever the rules say.
 */
export function isUnspecifiedIp(text: string): boolean {
  return parseIp(text)?.range() === "unspecified";
}
