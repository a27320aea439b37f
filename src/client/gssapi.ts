import type { Duplex } from "node:stream";
import { type GssContext, loadGssapi } from "../auth/gssapi-native.js";
import { GssEncapsulation, gssProtector } from "../auth/gssapi-stream.js";
import { StreamClosedError, StreamReader } from "../io/reader.js";
import { ProtocolError } from "../protocol/errors.js";
import {
  decodeProtectionLevel,
  encodeGssAbort,
  encodeGssMessage,
  encodeProtectionLevel,
  expectGssMessage,
  type ProtectionName,
} from "../protocol/gssapi.js";

export interface GssapiClientOptions {
  /**
   * The proxy's service: "rcmd@proxy.example.com" (host-based) or "rcmd/proxy.example.com"
   * (a principal, optionally with @REALM). See `gssapiServiceName` to build it from a proxy host.
   */
  service: string;
  /**
   * Levels this client accepts, most preferred first: the first is the one it asks for, and the
   * proxy's answer must be one of them. Default: confidentiality, integrity.
   */
  protection?: ProtectionName[];
  /** A credential cache to use instead of the default (KRB5CCNAME), e.g. "FILE:/tmp/krb5cc_1000". */
  ccache?: string;
}

export interface GssapiClientResult {
  stream: Duplex;
  reader: StreamReader;
  /** The level the proxy chose. */
  protection: ProtectionName;
  /** The proxy's principal, as Kerberos authenticated it (mutual authentication). */
  servicePrincipal: string | undefined;
}

/** A failed GSSAPI sub-negotiation; the message says which step and why. */
export class GssapiClientError extends Error {
  override name = "GssapiClientError";
}

/** "rcmd" + "proxy.example.com" → "rcmd@proxy.example.com"; a full name is kept as it is. */
export function gssapiServiceName(service: string, proxyHost: string): string {
  return service.includes("@") || service.includes("/") ? service : `${service}@${proxyHost}`;
}

const MAX_ROUNDS = 8;

function hint(message: string): string {
  if (/credentials cache|No credentials|Ticket expired/i.test(message)) return `${message}; run kinit first`;
  if (/not found in Kerberos database/i.test(message)) return `${message}; check the proxy's service name`;
  return message;
}

/**
 * The client half of RFC 1961, run after the proxy selected METHOD 0x01: establishes a
 * Kerberos context with mutual authentication, asks for the first acceptable protection level
 * and returns the (possibly encapsulated) stream to send the request over.
 */
export async function gssapiClientNegotiate(
  stream: Duplex,
  reader: StreamReader,
  options: GssapiClientOptions,
): Promise<GssapiClientResult> {
  const api = loadGssapi();
  const accepted = options.protection ?? ["confidentiality", "integrity"];
  if (accepted.length === 0) throw new GssapiClientError("GSSAPI: protection must list at least one level");
  let ctx: GssContext | undefined;
  // A failed exchange leaves the connection useless: tell the proxy (RFC 1961 abort) and close.
  const fail = (message: string): GssapiClientError => {
    stream.end(encodeGssAbort());
    ctx?.dispose();
    return new GssapiClientError(`GSSAPI: ${message}`);
  };
  // What the protection exchange was, for messages when the proxy turns it down.
  const offer = (): string =>
    `asked for "${accepted[0]}", accepting ${accepted.join(", ")}; choose with ?protection=LEVEL[,LEVEL] in the proxy URL: none, integrity, confidentiality`;
  const readMessage = async (type: "auth" | "protection"): Promise<Buffer> => {
    try {
      return await reader.read(expectGssMessage(type));
    } catch (err) {
      ctx?.dispose();
      stream.destroy();
      const aborted = err instanceof ProtocolError && /aborted/.test(err.message);
      // A proxy that will not grant the level asked for either aborts or just hangs up; either
      // way it did not say which level it wanted.
      if (type === "protection" && (aborted || err instanceof StreamClosedError)) {
        throw new GssapiClientError(
          `GSSAPI: the proxy ${aborted ? "refused" : "hung up on"} the protection level this client offered (${offer()})`,
        );
      }
      if (aborted) {
        throw new GssapiClientError(
          `GSSAPI: the proxy refused authentication for ${options.service} (its log says why)`,
        );
      }
      throw new GssapiClientError(`GSSAPI: ${(err as Error).message}`);
    }
  };

  try {
    ctx = new api.Context(options.service, options.ccache);
  } catch (err) {
    throw fail(hint((err as Error).message));
  }
  let out: Buffer;
  try {
    out = await ctx.step();
  } catch (err) {
    throw fail(hint((err as Error).message));
  }
  for (let round = 0; ; round++) {
    if (out.length > 0) stream.write(encodeGssMessage({ type: "auth", token: out }));
    if (ctx.complete) break;
    if (round === MAX_ROUNDS) throw fail(`context not established after ${MAX_ROUNDS} rounds`);
    const token = await readMessage("auth");
    try {
      out = await ctx.step(token);
    } catch (err) {
      throw fail(hint((err as Error).message));
    }
  }

  const wanted = accepted[0]!;
  stream.write(
    encodeGssMessage({ type: "protection", token: ctx.wrap(encodeProtectionLevel(wanted), false) }),
  );
  const wrapped = await readMessage("protection");
  let chosen: ProtectionName;
  try {
    chosen = decodeProtectionLevel(ctx.unwrap(wrapped).data);
  } catch (err) {
    throw fail(`protection level from the proxy: ${(err as Error).message}`);
  }
  // RFC 1961 §4.4: a client that finds the server's choice unacceptable closes the connection.
  if (!accepted.includes(chosen)) {
    ctx.dispose();
    stream.destroy();
    throw new GssapiClientError(
      `GSSAPI: the proxy wants protection "${chosen}", which this client does not accept (${offer()})`,
    );
  }
  const servicePrincipal = ctx.peerName;
  if (chosen === "none") {
    ctx.dispose();
    return { stream, reader, protection: chosen, servicePrincipal };
  }
  const encapsulated = new GssEncapsulation(stream, gssProtector(ctx, chosen), reader.release());
  return {
    stream: encapsulated,
    reader: new StreamReader(encapsulated),
    protection: chosen,
    servicePrincipal,
  };
}

/**
 * RFC 1961 as a client authentication method (METHOD 0x01): the shape of the client library's
 * pluggable SOCKS5 methods (`{ code, name, negotiate(stream, reader) }`), so a proxy hop can offer
 * it. `service` must be complete here ("rcmd@proxy.example.com"): build it with
 * gssapiServiceName(service, hop.host) when parsing `{ gssapi: { service } }` or `?gssapi=rcmd`.
 */
export function gssapiClientAuth(options: GssapiClientOptions): {
  readonly code: number;
  readonly name: string;
  negotiate(stream: Duplex, reader: StreamReader): Promise<{ stream: Duplex; reader: StreamReader }>;
} {
  return {
    code: 0x01,
    name: "gssapi",
    negotiate: async (stream, reader) => {
      const { stream: s, reader: r } = await gssapiClientNegotiate(stream, reader, options);
      return { stream: s, reader: r };
    },
  };
}
