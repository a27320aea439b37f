import type { Duplex } from "node:stream";
import { AuthError } from "../auth/method.js";
import { noAuth } from "../auth/none.js";
import type { StreamReader } from "../io/reader.js";
import type { SocksAddress } from "../protocol/address.js";
import { ProtocolError, Reply } from "../protocol/errors.js";
import { parseSocks4Request, type Socks4Request } from "../protocol/socks4.js";
import {
  type CommandName,
  encodeMethodSelection,
  encodeReply,
  type Greeting,
  Method,
  parseGreeting,
  parseRequest,
} from "../protocol/socks5.js";
import type { ServerContext, SessionRecord } from "./context.js";
import type { Throttle } from "./limits.js";
import type { Meter } from "./relay.js";
import { closeAfterReply, type Replier, socks4Replier, socks5Replier } from "./replier.js";
import { TLS_CERT_METHOD } from "./tls-listener.js";

/** The session is over and the client has been told why; `message` is for the log. */
export class SessionEnd extends Error {
  override name = "SessionEnd";
}

export interface Handshake {
  command: CommandName;
  target: SocksAddress;
  replier: Replier;
  /** The stream to relay over: the socket itself, or its GSSAPI encapsulation. */
  stream: Duplex;
  reader: StreamReader;
  /** Bandwidth limits for this session's relay, set once the request is admitted. */
  throttle?: Throttle;
  /** The user's transfer quota, counted into by the relay; set once the request is admitted. */
  meter?: Meter;
}

/** Greeting, method selection, sub-negotiation, request (RFC 1928 §3–4). */
export async function socks5Handshake(
  stream: Duplex,
  reader: StreamReader,
  ctx: ServerContext,
  record: SessionRecord,
): Promise<Handshake> {
  record.protocol = "socks5";
  let greeting: Greeting;
  try {
    greeting = await reader.read(parseGreeting);
  } catch (err) {
    if (err instanceof ProtocolError && err.reply === Method.NO_ACCEPTABLE) {
      closeAfterReply(stream, encodeMethodSelection(Method.NO_ACCEPTABLE));
      throw new SessionEnd(err.message);
    }
    throw err;
  }
  // A verified client certificate is the login: a client that offers "no authentication" keeps it.
  const certified = record.method === TLS_CERT_METHOD && greeting.methods.includes(Method.NO_AUTH);
  const method = certified ? noAuth : ctx.methods.find((m) => greeting.methods.includes(m.code));
  if (!method) {
    closeAfterReply(stream, encodeMethodSelection(Method.NO_ACCEPTABLE));
    const offered = greeting.methods.map((m) => `0x${m.toString(16).padStart(2, "0")}`).join(", ");
    const accepted = ctx.methods
      .map((m) => `${m.name} (0x${m.code.toString(16).padStart(2, "0")})`)
      .join(", ");
    throw new SessionEnd(
      `no acceptable authentication method: client offered ${offered}; this server accepts ${accepted}`,
    );
  }
  if (!certified) record.method = method.name;
  stream.write(encodeMethodSelection(method.code));
  let outcome: Awaited<ReturnType<typeof method.negotiate>>;
  try {
    outcome = await method.negotiate({ reader, stream, clientAddress: record.client });
  } catch (err) {
    if (err instanceof AuthError) {
      record.user = err.user;
      closeAfterReply(stream);
      throw new SessionEnd(err.message);
    }
    if (err instanceof ProtocolError) {
      closeAfterReply(stream, err.reply === undefined ? undefined : Buffer.from([0x01, err.reply]));
      throw new SessionEnd(`authentication: ${err.message}`);
    }
    throw err;
  }
  if (!certified) record.user = outcome.user;
  if (outcome.groups) record.groups = outcome.groups;
  if (outcome.protection) record.protection = outcome.protection;
  const io = outcome.encapsulation ?? { stream, reader };
  try {
    const request = await io.reader.read(parseRequest);
    return {
      command: request.command,
      target: request.address,
      replier: socks5Replier(io.stream, record),
      ...io,
    };
  } catch (err) {
    if (err instanceof ProtocolError) {
      const reply = err.reply ?? Reply.GENERAL_FAILURE;
      record.reply = reply;
      closeAfterReply(io.stream, encodeReply(reply));
      throw new SessionEnd(err.message);
    }
    throw err;
  }
}

/** One SOCKS4 or SOCKS4a request; refused when the server requires authentication. */
export async function socks4Handshake(
  stream: Duplex,
  reader: StreamReader,
  ctx: ServerContext,
  record: SessionRecord,
): Promise<Handshake> {
  record.protocol = "socks4";
  const replier = socks4Replier(stream, record);
  let request: Socks4Request;
  try {
    request = await reader.read(parseSocks4Request);
  } catch (err) {
    if (err instanceof ProtocolError) {
      replier.failure(Reply.GENERAL_FAILURE);
      throw new SessionEnd(err.message);
    }
    throw err;
  }
  if (request.address.type === "domain") record.protocol = "socks4a";
  // USERID is the client's unverified claim: logged, never trusted as a user.
  if (request.userId) record.ident = request.userId;
  if (record.method !== TLS_CERT_METHOD && !ctx.methods.some((m) => m.name === "none")) {
    replier.failure(Reply.NOT_ALLOWED);
    throw new SessionEnd(
      "SOCKS4 request refused: this server requires authentication, which SOCKS4 cannot carry; use SOCKS5 with a username and password",
    );
  }
  record.method ??= "none";
  return { command: request.command, target: request.address, replier, stream, reader };
}
