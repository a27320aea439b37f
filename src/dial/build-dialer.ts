import type { Config } from "../config/schema.js";
import { ChainDialer } from "./chain.js";
import type { Dialer } from "./dialer.js";
import { DirectDialer } from "./direct.js";
import { bindableExternal } from "./egress.js";
import { HopPicker } from "./hop-picker.js";
import { RoutingDialer } from "./routing.js";

/**
 * The server's dialer for a configuration: direct, plus one chain dialer per upstream and chain
 * name. One picker per context, so failover marks are shared by every route using an upstream.
 */
export function buildDialer(config: Config, picker = new HopPicker()): RoutingDialer {
  const common = { external: bindableExternal(config.external), resolve: config.resolve };
  const routes = new Map<string, Dialer>();
  for (const [name, route] of config.routes?.routes ?? [])
    routes.set(name, new ChainDialer(route, picker, common));
  return new RoutingDialer(new DirectDialer(common), routes);
}
