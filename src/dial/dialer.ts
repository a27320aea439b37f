import type { Duplex } from "node:stream";
import type { SocksAddress } from "../protocol/address.js";
import type { ResolvePreference } from "./family.js";

export interface DialOptions {
  /** Aborted when the client goes away or the session is shut down. */
  signal?: AbortSignal;
  /** Give up (reply 0x06) after this long. */
  timeoutMs?: number;
  /**
   * Called with every address a name resolves to before any connection is tried; an address it
   * rejects is never dialled. This is how policy stops a name from smuggling a connection into a
   * denied network.
   */
  allowAddress?: (ip: string) => boolean;
  /** Address-family preference chosen by the matching rule; the dialer's default otherwise. */
  resolve?: ResolvePreference;
  /** The route chosen by the matching rule: an upstream or chain name, or `direct` (the default). */
  via?: string;
}

export interface Dialed {
  stream: Duplex;
  /** The local end of the outbound connection: what a SOCKS reply reports as BND.ADDR/PORT. */
  local: { host: string; port: number };
  /** The address actually connected to (after resolution). */
  remote: { host: string; port: number };
}

/**
 * Every outbound connection goes through a Dialer: direct, or through a chain of upstream
 * proxies. Commands never open sockets to targets themselves.
 */
export interface Dialer {
  dial(target: SocksAddress, options?: DialOptions): Promise<Dialed>;
}
