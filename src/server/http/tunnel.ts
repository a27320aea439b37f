import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { errorCode } from "../../dial/errors.js";
import { HangupOptions } from "../../dial/hangup.js";
import { formatAddress, type SocksAddress } from "../../protocol/address.js";
import { Reply } from "../../protocol/errors.js";
import { relay } from "../relay.js";
import { boundAddress } from "../replier.js";
import { admitHttp, dialBudget } from "./admit.js";
import { answerForError, noteAnswer, sendAnswerAndClose } from "./answer.js";
import type { HttpConnection } from "./connection.js";

/**
 * CONNECT host:port: decided and limited as a SOCKS CONNECT is, the target dialled through the
 * admitting rule's route, `200` sent, then the same relay as SOCKS (bytes counted into the record,
 * idle timeout, bandwidth). A refusal is answered and the connection closed.
 */
export async function tunnel(
  conn: HttpConnection,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: SocksAddress,
): Promise<void> {
  const { ctx, record } = conn;
  // The parser's idle timer has no business in a tunnel: the relay keeps its own.
  (socket as Duplex & { setTimeout?: (ms: number) => void }).setTimeout?.(0);
  const passed = await admitHttp(conn, req, target);
  if ("status" in passed) {
    noteAnswer(record, passed);
    sendAnswerAndClose(socket, passed);
    return;
  }
  const { admitted, lease, started } = passed;
  try {
    const timeoutMs = ctx.config.timeouts.connect;
    let dialed: Awaited<ReturnType<typeof ctx.outbound.connect>>;
    try {
      dialed = await ctx.outbound.connect(
        admitted,
        new HangupOptions(conn.hangup, dialBudget(timeoutMs, started)),
      );
    } catch (err) {
      const a = answerForError(err);
      if (errorCode(err) === "ETIMEDOUT")
        a.text = `connect to ${formatAddress(admitted.target)} timed out after ${timeoutMs} ms (timeouts.connect)`;
      noteAnswer(record, a);
      sendAnswerAndClose(socket, a);
      return;
    }
    record.remote = formatAddress(dialed.remote);
    record.bound = formatAddress(boundAddress(dialed.local.host, dialed.local.port));
    noteAnswer(record, { status: 200, text: "tunnel open", reply: Reply.SUCCEEDED });
    socket.write("HTTP/1.1 200 Connection established\r\n\r\n");
    const result = await relay(socket, dialed.stream, {
      leftover: head,
      idleTimeoutMs: ctx.config.timeouts.idle,
      ...(lease.throttle && { throttle: lease.throttle }),
      tally: record,
    });
    if (result.reason !== "completed") record.reason = result.reason;
  } finally {
    lease.release();
  }
}
