import type tls from "node:tls";

/**
 * TLS to a proxy (`https://`, `socks5+tls://`, `socks5h+tls://`): files as URL parameters
 * (`?ca=FILE&cert=FILE&key=FILE&servername=NAME`), read for every connection so that renewed
 * files are picked up without a restart.
 */
export interface HopTls {
  /** PEM file of the CA certificates the proxy's certificate must chain to (default: Node's). */
  ca?: string;
  /** PEM file of a client certificate to present, with `key`. */
  cert?: string;
  /** PEM file of the client certificate's private key. */
  key?: string;
  /** The name sent in SNI and checked in the proxy's certificate (default: the proxy's host). */
  servername?: string;
  /** Library callers only: more tls.connect options (in-memory PEM, pinning); not part of a URL. */
  options?: tls.ConnectionOptions;
}

/** The URL parameters that configure a TLS hop. */
export const TLS_PARAMS = ["ca", "cert", "key", "servername"] as const;
