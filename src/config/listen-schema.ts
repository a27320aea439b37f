import { z } from "zod";
import { parseCidr } from "../policy/rules.js";
import { via } from "./fields.js";
import { type HostPort, parseHostPort } from "./units.js";

/**
 * PROXY protocol on a listener (docs/scale-out.md): the balancers at `from` must start every
 * connection with a v1 or v2 header, whose client address then stands for the connection's.
 */
const proxyProtocolSchema = z.strictObject({
  /** The balancers: addresses or ranges allowed, and required, to send a PROXY header. */
  from: z.array(z.string().transform(via(parseCidr))).min(1, "name the balancers' addresses"),
  /**
   * Whether other sources may connect directly (as themselves, without a header). Default: no,
   * only the balancers reach this listener. Either way a header from another source is refused.
   */
  allowDirect: z.boolean().default(false),
});

export type ProxyProtocolConfig = z.output<typeof proxyProtocolSchema>;

/** One `listen:` entry: "HOST:PORT", or an object with the address and per-listener options. */
export const listenEntrySchema = z.union([
  z.string().transform((v, ctx): ListenEntry => via(parseHostPort)(v, ctx)),
  z
    .strictObject({
      address: z.string().transform(via(parseHostPort)),
      proxyProtocol: proxyProtocolSchema.optional(),
    })
    .transform(({ address, ...options }): ListenEntry => ({ ...address, ...options })),
]);

export type ListenEntry = HostPort & { proxyProtocol?: ProxyProtocolConfig };
