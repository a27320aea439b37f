import type { External, ResolvePreference } from "../config/routes-schema.js";
import type { Config } from "../config/schema.js";
import type { Policy } from "../policy/policy.js";
import { ChainDialer, type ChainDialerOptions } from "./chain.js";
import { DirectDialer } from "./direct.js";
import { bindableExternal } from "./egress.js";
import { HopPicker } from "./hop-picker.js";
import { type Lookup, Outbound } from "./outbound.js";
import { Resolver } from "./resolver.js";

export interface OutboundOverrides {
  /** The server's resolver, shared across reloads (ServerState). */
  resolver?: Resolver;
  /** A name lookup of the test's own, behind a resolver of its own. */
  lookup?: Lookup;
  /** Egress addresses handed straight to the dialer, past the load-time check. */
  external?: External;
  picker?: HopPicker;
  /** A family preference other than the configuration's. */
  resolve?: ResolvePreference;
  /** Told of each upstream's part in a dial (metrics). */
  onHop?: ChainDialerOptions["onHop"];
}

/**
 * The server's way out for a configuration: direct, plus one chain dialer per upstream and chain
 * name. One picker per context, so failover marks are shared by every route using an upstream.
 */
export function buildOutbound(config: Config, policy: Policy, overrides: OutboundOverrides = {}): Outbound {
  const external = overrides.external ?? bindableExternal(config.external);
  const resolve = overrides.resolve ?? config.resolve;
  const common = {
    external,
    resolve,
    ...(overrides.lookup && { lookup: overrides.lookup }),
    ...(overrides.onHop && { onHop: overrides.onHop }),
  };
  const picker = overrides.picker ?? new HopPicker();
  const routes = new Map<string, ChainDialer>();
  for (const [name, route] of config.routes?.routes ?? [])
    routes.set(name, new ChainDialer(route, picker, common));
  const resolver = overrides.resolver ?? new Resolver(overrides.lookup ? { lookup: overrides.lookup } : {});
  return new Outbound(policy, config, new DirectDialer({ external }), routes, { resolve, resolver });
}
