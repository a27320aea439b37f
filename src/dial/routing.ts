import type { SocksAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import type { Dialed, Dialer, DialOptions } from "./dialer.js";
import { DialError } from "./errors.js";

/**
 * The server's dialer: `direct` unless the matching rule names a route (`via:`), then that
 * upstream or chain. An unknown name cannot happen with a validated configuration; it is still
 * refused rather than silently sent direct.
 */
export class RoutingDialer implements Dialer {
  constructor(
    readonly direct: Dialer,
    readonly routes: ReadonlyMap<string, Dialer> = new Map(),
  ) {}

  dial(target: SocksAddress, options: DialOptions = {}): Promise<Dialed> {
    const via = options.via ?? "direct";
    if (via === "direct") return this.direct.dial(target, options);
    const route = this.routes.get(via);
    if (!route) {
      return Promise.reject(
        new DialError(
          `no upstream or chain named ${via}; define it under upstreams: or chains:`,
          Reply.GENERAL_FAILURE,
        ),
      );
    }
    return route.dial(target, options);
  }
}
