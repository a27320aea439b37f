/**
 * What speaks on a fresh connection, from its first bytes: SOCKS4 and SOCKS5 announce their
 * version in byte one; an HTTP client starts with a method name, which we recognise so we can
 * tell a misconfigured browser or curl what went wrong.
 */
export type Sniffed =
  | { kind: "socks4" }
  | { kind: "socks5" }
  | { kind: "http"; method: string }
  | { kind: "unknown"; first: number };

const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/** Returns undefined while the bytes are still a prefix of an HTTP method followed by a space. */
export function sniffProtocol(buf: Uint8Array): Sniffed | undefined {
  if (buf.length === 0) return undefined;
  const first = buf[0]!;
  if (first === 4) return { kind: "socks4" };
  if (first === 5) return { kind: "socks5" };
  const text = Buffer.from(buf.buffer, buf.byteOffset, Math.min(buf.length, 8)).toString("latin1");
  for (const m of HTTP_METHODS) {
    const word = `${m} `;
    if (text.startsWith(word)) return { kind: "http", method: m };
    if (word.startsWith(text)) return undefined;
  }
  return { kind: "unknown", first };
}
