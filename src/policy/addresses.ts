import ipaddr from "ipaddr.js";
import { isPlainIpv4 } from "../protocol/address.js";

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
  // Already in the form ipaddr.js would give it (every accepted IPv4 client's address).
  if (isPlainIpv4(text)) return text;
  return parseIp(text)?.toString() ?? text;
}

export function isLoopback(text: string): boolean {
  if (text === "localhost") return true;
  if (isPlainIpv4(text)) return text.startsWith("127.");
  return parseIp(text)?.range() === "loopback";
}
