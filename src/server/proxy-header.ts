import type { Socket } from "node:net";
import type { ProxyProtocolConfig } from "../config/listen-schema.js";
import { StreamReader } from "../io/reader.js";
import { normalizeIp } from "../policy/addresses.js";
import { inCidr, policyIp } from "../policy/rules.js";
import { ProtocolError } from "../protocol/errors.js";
import type { Parser } from "../protocol/parse.js";
import {
  detectProxyHeader,
  type ProxyHeader,
  parseProxyHeader,
  V2_MAX_LENGTH,
} from "../protocol/proxy-protocol.js";

/** A balancer sends its header at once; one that has not within this long is not doing so. */
export const PROXY_HEADER_TIMEOUT_MS = 5000;

/** Who a connection on a PROXY protocol listener turned out to be. */
export interface Preamble {
  /** The client the session is for. */
  client: string;
  clientPort: number;
  /** The balancer that relayed it ("host:port"), when a header named a client. */
  proxy?: string;
}

/** Why a connection was refused before its session began. */
export class PreambleRefused extends Error {
  override name = "PreambleRefused";
}

/** Whether `address` is one of the listener's balancers. */
export function isListedSource(address: string, config: ProxyProtocolConfig): boolean {
  const ip = policyIp(address);
  return ip !== undefined && config.from.some((c) => inCidr(ip, c));
}

/**
 * Reads the start of a connection on a listener with `proxyProtocol`: from a listed source a
 * PROXY header (v1 or v2) is required; from any other source (allowed only with allowDirect)
 * one is refused, since anyone could write one. Bytes after the header stay in the socket for
 * the session. Throws PreambleRefused with the reason; the caller closes the socket.
 */
export async function readPreamble(
  socket: Socket,
  config: ProxyProtocolConfig,
  peer: { address: string; port: number },
  handshakeMs: number,
): Promise<Preamble> {
  const listed = isListedSource(peer.address, config);
  const self = { client: peer.address, clientPort: peer.port };
  if (!listed && !config.allowDirect)
    throw new PreambleRefused(
      `${peer.address} is not a PROXY protocol source of this listener (proxyProtocol.from) and allowDirect is off`,
    );
  // A direct client has the usual handshake time to speak; a balancer sends its header at once.
  const timeoutMs = listed
    ? Math.min(handshakeMs > 0 ? handshakeMs : Number.POSITIVE_INFINITY, PROXY_HEADER_TIMEOUT_MS)
    : handshakeMs;
  const reader = new StreamReader(socket, V2_MAX_LENGTH);
  let expired = false;
  const timer =
    timeoutMs > 0
      ? setTimeout(() => {
          expired = true;
          socket.destroy();
        }, timeoutMs)
      : undefined;
  try {
    if (!listed) {
      await reader.read(noHeader);
      reader.handBack();
      return self;
    }
    const header = await reader.read(parseProxyHeader);
    reader.handBack();
    return fromHeader(header, self);
  } catch (err) {
    reader.release();
    if (expired)
      throw new PreambleRefused(
        listed ? `no PROXY header within ${timeoutMs} ms` : `nothing received within ${timeoutMs} ms`,
      );
    if (err instanceof PreambleRefused) throw err;
    const what = err instanceof ProtocolError ? "bad PROXY header" : "closed before its PROXY header";
    throw new PreambleRefused(`${what} from ${peer.address}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Peeks, consuming nothing, and refuses a header from a source not allowed to send one. */
const noHeader: Parser<undefined> = (buf) => {
  const seen = detectProxyHeader(buf);
  if (seen === "maybe") return undefined;
  if (seen === "yes")
    throw new PreambleRefused(
      "PROXY header from a source not in proxyProtocol.from: refused, it could name any client",
    );
  return { value: undefined, consumed: 0 };
};

/** The client a header names; without one (LOCAL, UNKNOWN, UNIX, UNSPEC), the balancer itself. */
function fromHeader(header: ProxyHeader, self: { client: string; clientPort: number }): Preamble {
  const e = header.endpoints;
  if (!e) return self;
  return {
    client: normalizeIp(e.sourceAddress),
    clientPort: e.sourcePort,
    proxy: `${self.client.includes(":") ? `[${self.client}]` : self.client}:${self.clientPort}`,
  };
}
