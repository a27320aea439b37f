import type { Socket } from "node:net";
import { Hangup } from "../dial/hangup.js";
import { StreamReader } from "../io/reader.js";
import type { RequestQuery } from "../policy/policy.js";
import { formatAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import type { Parser } from "../protocol/parse.js";
import { type Sniffed, sniffProtocol } from "../protocol/sniff.js";
import { associateCommand } from "./associate.js";
import { bindCommand } from "./bind.js";
import { connectCommand } from "./connect.js";
import type { ServerContext, SessionRecord } from "./context.js";
import { type Handshake, SessionEnd, socks4Handshake, socks5Handshake } from "./handshake.js";
import { serveHttpProxy } from "./http/connection.js";
import { rejectHttp } from "./http-reject.js";

/** Peeks at the first bytes without consuming them. */
const sniff: Parser<Sniffed> = (buf) => {
  const value = sniffProtocol(buf);
  return value && { value, consumed: 0 };
};

/**
 * The abort reason when the client goes away. Made once: a DOMException or Error per session
 * would build a stack trace for every one, a measurable share of a short session's cost.
 */
const CLIENT_GONE = new Error("the client closed the connection");

/** The server's accounting at the end of the handshake (src/server/server.ts). */
export interface SessionPhases {
  /**
   * The request has been read: the connection leaves the handshake budget and takes a session
   * slot. Returns which limit refuses it, if one does (the client then gets "not allowed"); a
   * promise when the slot is asked of the workers' primary.
   */
  established(): string | undefined | Promise<string | undefined>;
  /**
   * HTTP keep-alive: the current record is complete. Emits it and returns a fresh one (new id,
   * same client) for the connection's next request; `established` called again then only
   * announces that record, the connection keeping its one slot.
   */
  next?(): SessionRecord;
}

/**
 * One client connection from accept to close, top to bottom: sniff, handshake, policy, command.
 * Never throws: whatever happens ends up in `record`.
 */
export async function runSession(
  socket: Socket,
  ctx: ServerContext,
  record: SessionRecord,
  phases?: SessionPhases,
): Promise<void> {
  const hangup = new Hangup();
  socket.once("close", () => hangup.abort(CLIENT_GONE));
  // Errors surface through the reader and the relay; this keeps a late one from crashing us.
  socket.on("error", ignoreError);
  const reader = new StreamReader(socket);
  // 0 means no limit, as it does for the connect and idle timeouts.
  const handshakeMs = ctx.config.timeouts.handshake;
  let handshakeTimer =
    handshakeMs > 0 ? setTimeout(handshakeExpired, handshakeMs, socket, record, handshakeMs) : undefined;
  try {
    const sniffed = await reader.read(sniff);
    let hs: Handshake;
    switch (sniffed.kind) {
      case "socks5":
        hs = await socks5Handshake(socket, reader, ctx, record);
        break;
      case "socks4":
        hs = await socks4Handshake(socket, reader, ctx, record);
        break;
      case "http":
        record.protocol = "http";
        if (!ctx.config.http) {
          record.reason = `HTTP ${sniffed.method} request on the SOCKS port (http: false); answered 400`;
          rejectHttp(socket);
          return;
        }
        // The HTTP proxy bounds each request head itself.
        clearTimeout(handshakeTimer);
        handshakeTimer = undefined;
        await serveHttpProxy(socket, reader.release(), ctx, record, phases);
        return;
      default:
        record.protocol = "unknown";
        record.reason = `unsupported protocol version ${sniffed.first} from ${record.client}`;
        socket.destroy();
        return;
    }
    clearTimeout(handshakeTimer);
    // Not kept for the rest of a session that may last hours.
    handshakeTimer = undefined;
    record.handshakeMs = Date.now() - record.startedAt;
    record.command = hs.command;
    record.target = formatAddress(hs.target);
    const refused = await phases?.established();
    if (refused) {
      record.reason = `refused: ${refused}`;
      hs.replier.failure(Reply.NOT_ALLOWED);
      return;
    }
    await runCommand(hs, ctx, record, hangup, socket);
  } catch (err) {
    if (!record.reason) record.reason = err instanceof SessionEnd ? err.message : `${(err as Error).message}`;
    if (!(err instanceof SessionEnd)) socket.destroy();
  } finally {
    clearTimeout(handshakeTimer);
  }
}

function ignoreError(): void {}

function handshakeExpired(socket: Socket, record: SessionRecord, ms: number): void {
  record.reason = `handshake not finished within ${ms} ms`;
  socket.destroy();
}

async function runCommand(
  hs: Handshake,
  ctx: ServerContext,
  record: SessionRecord,
  hangup: Hangup,
  socket: Socket,
): Promise<void> {
  const query: RequestQuery = {
    client: record.client,
    user: record.user,
    ...(record.groups && { groups: record.groups }),
    method: record.method ?? "none",
    version: hs.replier.version,
    command: hs.command,
    target: hs.target,
  };
  switch (hs.command) {
    case "connect":
      return await connectCommand(hs, query, ctx, record, hangup);
    // These take a real AbortSignal, made now (aborted already if the client has gone).
    case "bind":
      return await bindCommand(hs, query, ctx, record, hangup.signal, socket);
    case "udp":
      return await associateCommand(hs, query, ctx, record, hangup.signal, socket);
  }
}
