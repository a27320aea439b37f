import { replyName } from "../protocol/errors.js";

/** Where in the exchange with a proxy the failure happened. */
export type SocksStage =
  | "connect"
  | "tls"
  | "negotiate"
  | "auth"
  | "request"
  | "accept"
  | "timeout"
  | "aborted";

/** What a SocksError carries besides its message. */
export interface SocksErrorDetails {
  stage: SocksStage;
  /** Index in the chain of the proxy that failed or reported the failure (0 = first). */
  hop: number;
  /** That proxy, as a URL without its password. */
  proxy: string;
  /** SOCKS version spoken to that proxy. */
  version: 4 | 5;
  /** The reply code the proxy sent (SOCKS5 REP, SOCKS4 CD), when it sent one. */
  reply?: number;
  cause?: unknown;
}

/**
 * A SOCKS client failure: the proxy refused (with `reply` and `replyName`), authentication
 * failed, a proxy could not be reached, or the exchange timed out or was aborted. `hop` says
 * which proxy of the chain: a hop that cannot reach the next one reports it with its own index.
 */
export class SocksError extends Error {
  override name = "SocksError";
  /** Stable string code, like Node's system errors: `ESOCKS_<STAGE>`. */
  readonly code: string;
  readonly stage: SocksStage;
  readonly hop: number;
  readonly proxy: string;
  readonly version: 4 | 5;
  /** Reply code from the proxy, when the proxy answered with a failure. */
  readonly reply: number | undefined;
  /** Human name of `reply` ("connection refused", "request rejected or failed", ...). */
  readonly replyName: string | undefined;

  constructor(message: string, details: SocksErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.stage = details.stage;
    this.hop = details.hop;
    this.proxy = details.proxy;
    this.version = details.version;
    this.reply = details.reply;
    this.replyName = details.reply === undefined ? undefined : replyName(details.reply, details.version);
    this.code = `ESOCKS_${details.stage.toUpperCase()}`;
  }
}
