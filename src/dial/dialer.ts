import type { Duplex } from "node:stream";
import type { Hangup } from "./hangup.js";

export interface DialOptions {
  /** Aborted when the client goes away or the session is shut down. */
  signal?: AbortSignal;
  /**
   * The same event without an AbortSignal, where the caller has one (a server session): the
   * direct dialer watches this instead, and `signal` is then a getter that makes one on demand.
   */
  hangup?: Hangup;
  /** Give up (reply 0x06) after this long; name resolution and the connection share it. */
  timeoutMs?: number;
  /** The client address name lookups are charged to (the resolver bounds them per client). */
  client?: string;
}

export interface Dialed {
  stream: Duplex;
  /** The local end of the outbound connection: what a SOCKS reply reports as BND.ADDR/PORT. */
  local: { host: string; port: number };
  /** The address actually connected to (after resolution). */
  remote: { host: string; port: number };
}
