import { z } from "zod";
import { parseCidr } from "../policy/rules.js";
import { via } from "./fields.js";
import { type HostPort, parseHostPort } from "./units.js";

/**
 * One `listen:` entry: "HOST:PORT", or an object for a listener with more to say: TLS
 * (docs/tls.md), the PROXY protocol (docs/scale-out.md). Kept apart from schema.ts so that file
 * only grows by a line.
 */

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

/** Which part of a verified client certificate's subject names the user. */
export const certUserFieldSchema = z.enum(["CN", "emailAddress", "UID", "O", "OU"]);
export type CertUserField = z.infer<typeof certUserFieldSchema>;

/** `tls:` of a listener: SOCKS5 (and, later, HTTP proxying) inside TLS on that port. */
export const listenTlsSchema = z.strictObject({
  /** PEM certificate chain (leaf first); relative to the configuration file. Re-read on reload. */
  cert: z.string().min(1),
  /** PEM private key of the certificate. */
  key: z.string().min(1),
  /** PEM CA certificates that client certificates must chain to; asks clients for one. */
  clientCa: z.string().min(1).optional(),
  /** With clientCa: refuse clients without a valid certificate in the TLS handshake itself. */
  requireClientCert: z.boolean().default(false),
  /** The subject field of a verified client certificate that becomes the session's user. */
  userField: certUserFieldSchema.default("CN"),
  /** The oldest TLS version accepted. */
  minVersion: z.enum(["TLSv1.2", "TLSv1.3"]).default("TLSv1.2"),
});
export type ListenTls = z.output<typeof listenTlsSchema>;

export interface ListenEntry extends HostPort {
  tls?: ListenTls;
  proxyProtocol?: ProxyProtocolConfig;
}

const hostPort = z.string().transform(via(parseHostPort));

const entryObject = z
  .strictObject({
    address: hostPort,
    tls: listenTlsSchema.optional(),
    proxyProtocol: proxyProtocolSchema.optional(),
  })
  .superRefine((v, ctx) => {
    if (v.tls?.requireClientCert && !v.tls.clientCa) {
      ctx.addIssue({
        code: "custom",
        path: ["tls", "requireClientCert"],
        message: "requireClientCert needs clientCa: the CA file client certificates are checked against",
      });
    }
  })
  .transform(({ address, ...rest }): ListenEntry => ({ ...address, ...rest }));

/** A string is the short form of `{ address }`, so both forms report problems at the same keys. */
export const listenEntrySchema = z.preprocess((v, ctx) => {
  if (typeof v !== "string") return v;
  // A bad string is reported at the entry itself, as the user wrote no `address:`.
  try {
    parseHostPort(v);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message, input: v });
  }
  return { address: v };
}, entryObject) as z.ZodType<ListenEntry, string | z.input<typeof entryObject>>;

/** "host:port" as written in messages and as the key a listener is known by. */
export const listenKey = (host: string, port: number): string =>
  `${host.includes(":") ? `[${host}]` : host}:${port}`;
