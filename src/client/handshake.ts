import { lookup } from "node:dns/promises";
import type { Duplex } from "node:stream";
import { StreamClosedError, type StreamReader } from "../io/reader.js";
import { addressOf, formatAddress, type SocksAddress } from "../protocol/address.js";
import { ProtocolError, Reply, replyName, Socks4Reply } from "../protocol/errors.js";
import { encodeSocks4Request, parseSocks4Reply } from "../protocol/socks4.js";
import {
  type CommandName,
  encodeGreeting,
  encodeRequest,
  Method,
  parseMethodSelection,
  parseReply,
} from "../protocol/socks5.js";
import { type ClientAuthMethod, noAuth, userPassAuth } from "./auth.js";
import { SocksError, type SocksStage } from "./errors.js";
import { gssapiClientAuth, gssapiServiceName } from "./gssapi.js";
import { httpConnectHop } from "./http-connect.js";
import { describeHop, type ProxyHop } from "./proxy.js";

/** The stream a hop's exchange runs over and the reader on it. */
export interface HopIo {
  stream: Duplex;
  reader: StreamReader;
}

/** Methods offered to a SOCKS5 hop: its own list, else userpass (with credentials) then none. */
export function methodsFor(hop: ProxyHop): ClientAuthMethod[] {
  if (hop.methods && hop.methods.length > 0) return hop.methods;
  if (hop.gssapi) {
    // Only what was asked for: offering "none" too would let a proxy skip Kerberos.
    const { service = "rcmd", protection, ccache } = hop.gssapi;
    const gssapi = gssapiClientAuth({ service: gssapiServiceName(service, hop.host), protection, ccache });
    return hop.username !== undefined
      ? [gssapi, userPassAuth({ username: hop.username, password: hop.password ?? "" })]
      : [gssapi];
  }
  if (hop.username !== undefined) {
    return [userPassAuth({ username: hop.username, password: hop.password ?? "" }), noAuth];
  }
  return [noAuth];
}

export function fail(
  hop: ProxyHop,
  index: number,
  stage: SocksStage,
  message: string,
  extra: object = {},
): SocksError {
  return new SocksError(`proxy #${index + 1} (${describeHop(hop)}): ${message}`, {
    stage,
    hop: index,
    proxy: describeHop(hop),
    version: hop.version,
    ...extra,
  });
}

/** Runs `step`, turning stream and protocol errors into a SocksError for this hop and stage. */
export async function at<T>(
  hop: ProxyHop,
  index: number,
  stage: SocksStage,
  step: () => Promise<T>,
): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof SocksError) throw err;
    if (err instanceof StreamClosedError)
      throw fail(hop, index, stage, `connection closed during ${stage}: ${err.message}`, { cause: err });
    if (err instanceof ProtocolError)
      throw fail(hop, index, stage, `malformed answer during ${stage}: ${err.message}`, { cause: err });
    throw fail(hop, index, stage, (err as Error).message, { cause: err });
  }
}

/**
 * The address to put in a request to `hop`: names are resolved here unless the hop resolves them
 * itself (socks4a, socks5h); SOCKS4 can only carry IPv4.
 */
export async function addressForHop(
  hop: ProxyHop,
  index: number,
  address: SocksAddress,
): Promise<SocksAddress> {
  let out = address;
  if (address.type === "domain" && !hop.remoteDns) {
    const found = await at(hop, index, "request", () =>
      lookup(address.host, { family: hop.version === 4 ? 4 : 0 }).catch((err: NodeJS.ErrnoException) => {
        throw new Error(
          `cannot resolve ${address.host} (${err.code ?? err.message}); use socks5h:// or socks4a:// to let the proxy resolve it`,
        );
      }),
    );
    out = addressOf(found.address, address.port);
  }
  if (hop.version === 4 && out.type === "ipv6") {
    throw fail(
      hop,
      index,
      "request",
      `SOCKS4 cannot carry the IPv6 address ${formatAddress(out)}; use socks5://`,
    );
  }
  return out;
}

/**
 * One hop's whole exchange over `io`: method negotiation and authentication (SOCKS5), then the
 * request and its first reply. Returns the stream to go on with (a method may encapsulate) and
 * the address in the reply (BND.ADDR).
 */
export async function hopRequest(
  io: HopIo,
  hop: ProxyHop,
  index: number,
  command: CommandName,
  target: SocksAddress,
): Promise<{ io: HopIo; bound: SocksAddress }> {
  if (hop.http) return httpConnectHop(io, hop, index, command, target);
  const address = await addressForHop(hop, index, target);
  if (hop.version === 4) {
    if (command === "udp") throw fail(hop, index, "request", "SOCKS4 has no UDP ASSOCIATE; use socks5://");
    io.stream.write(encodeSocks4Request({ command, address, userId: hop.username ?? "" }));
    const bound = await readSocks4Reply(io, hop, index, "request");
    return { io, bound };
  }
  const methods = methodsFor(hop);
  io.stream.write(encodeGreeting({ methods: methods.map((m) => m.code) }));
  const chosen = await at(hop, index, "negotiate", () => io.reader.read(parseMethodSelection));
  const method = methods.find((m) => m.code === chosen);
  if (!method) {
    const offered = methods.map((m) => m.name).join(", ");
    const why =
      chosen === Method.NO_ACCEPTABLE
        ? `accepts none of the methods offered (${offered})${hop.username === undefined ? "; it may need a user name and password in the URL" : ""}`
        : `selected method 0x${chosen.toString(16)}, which was not offered`;
    throw fail(hop, index, "negotiate", why);
  }
  const result = await at(hop, index, "auth", () => method.negotiate(io.stream, io.reader));
  const next: HopIo = { stream: result.stream ?? io.stream, reader: result.reader ?? io.reader };
  next.stream.write(encodeRequest({ command, address }));
  const bound = await readSocks5Reply(next, hop, index, "request", address);
  return { io: next, bound };
}

/** Reads one SOCKS5 reply; a failure code becomes a SocksError with `reply` set. */
export async function readSocks5Reply(
  io: HopIo,
  hop: ProxyHop,
  index: number,
  stage: SocksStage,
  requested?: SocksAddress,
): Promise<SocksAddress> {
  const reply = await at(hop, index, stage, () => io.reader.read(parseReply));
  if (reply.reply !== Reply.SUCCEEDED) {
    const what = requested ? ` for ${formatAddress(requested)}` : "";
    throw fail(
      hop,
      index,
      stage,
      `refused${what}: ${replyName(reply.reply, 5)} (0x${reply.reply.toString(16).padStart(2, "0")})`,
      {
        reply: reply.reply,
      },
    );
  }
  return reply.address;
}

/** Reads one SOCKS4 reply; anything but 90 (granted) becomes a SocksError with `reply` set. */
export async function readSocks4Reply(
  io: HopIo,
  hop: ProxyHop,
  index: number,
  stage: SocksStage,
): Promise<SocksAddress> {
  const reply = await at(hop, index, stage, () => io.reader.read(parseSocks4Reply));
  if (reply.reply !== Socks4Reply.GRANTED) {
    throw fail(hop, index, stage, `refused: ${replyName(reply.reply, 4)} (${reply.reply})`, {
      reply: reply.reply,
    });
  }
  return { type: "ipv4", host: reply.host, port: reply.port };
}
