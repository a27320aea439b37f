import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { pipeline } from "node:stream";
import { errorCode } from "../../dial/errors.js";
import { HangupOptions } from "../../dial/hangup.js";
import { formatAddress, type SocksAddress } from "../../protocol/address.js";
import { Reply } from "../../protocol/errors.js";
import { appendVia, endToEndHeaders } from "../../protocol/http-proxy.js";
import { boundAddress } from "../replier.js";
import { admitHttp, dialBudget } from "./admit.js";
import { type Answer, answerForError, noteAnswer, sendAnswer } from "./answer.js";
import { finished, type HttpConnection } from "./connection.js";
import { dialedOf, metered, type UpstreamOptions } from "./upstream.js";

/** Response heads from targets larger than this are refused (502), as ours are for clients. */
const MAX_RESPONSE_HEAD = 64 * 1024;

/**
 * One absolute-URI request (`GET http://host/path`): decided and limited like a SOCKS CONNECT to
 * host:port, then sent to the target in origin-form over this connection's pooled connection to
 * it (or a new one through the admitting rule's route), hop-by-hop headers dropped and Via
 * added both ways. Bodies stream in both directions (chunked or not, re-framed by Node), a 100
 * Continue from the target is passed on, and a target that stops mid-response ends the client's
 * connection rather than letting a cut-off body look whole.
 */
export async function forwardRequest(
  conn: HttpConnection,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  target: SocksAddress,
  path: string,
): Promise<void> {
  const { ctx, record } = conn;
  const passed = await admitHttp(conn, req, target);
  if ("status" in passed) {
    noteAnswer(record, passed);
    sendAnswer(res, passed);
    await finished(res);
    return;
  }
  const { admitted, lease, started } = passed;
  const { connect: connectMs, idle: idleMs } = ctx.config.timeouts;
  const authority = formatAddress(target).replace(/:80$/, "");
  const headers = [
    "Host",
    authority,
    ...endToEndHeaders(req.rawHeaders, ["host", "via"]),
    "Via",
    appendVia(viaOf(req.rawHeaders), req.httpVersion),
  ];
  // The client's chunked body goes on chunked (Node frames it; the header only asks it to).
  if (req.headers["transfer-encoding"] !== undefined) headers.push("Transfer-Encoding", "chunked");
  const options: UpstreamOptions = {
    agent: conn.agent,
    method: req.method!,
    path,
    headers: headers as unknown as http.OutgoingHttpHeaders,
    setHost: false,
    maxHeaderSize: MAX_RESPONSE_HEAD,
    insecureHTTPParser: false,
    ferryKey: `${admitted.decision.rule}\0${admitted.decision.route ?? "direct"}\0${record.user ?? ""}\0${formatAddress(target)}`,
    ferryDial: () =>
      ctx.outbound.connect(admitted, new HangupOptions(conn.hangup, dialBudget(connectMs, started))),
  };
  // Without a body a request can be sent again: once, when a kept-alive connection to the target
  // turns out to have been closed by it just as it was reused (nothing was answered on it).
  const bodiless =
    req.headers["transfer-encoding"] === undefined && (req.headers["content-length"] ?? "0") === "0";
  try {
    await new Promise<void>((resolve) => {
      let up: http.ClientRequest;
      let upClosed = false;
      let resClosed = false;
      let base: { read: number; written: number } | undefined;
      let stream: Duplex | undefined;
      // Done when both have closed: the client's response, and the request to the target (whose
      // connection is back in the pool by then, for the next request to reuse).
      const done = (): void => {
        if (!upClosed || !resClosed) return;
        if (stream instanceof net.Socket && base) {
          record.bytesUp = stream.bytesWritten - base.written;
          record.bytesDown = stream.bytesRead - base.read;
        }
        resolve();
      };
      const send = (mayRetry: boolean): void => {
        const current = http.request(options);
        up = current;
        upClosed = false;
        current.on("socket", (s: Duplex) => {
          stream = s;
          const dialed = dialedOf.get(s);
          if (dialed) {
            record.remote = formatAddress(dialed.remote);
            record.bound = formatAddress(boundAddress(dialed.local.host, dialed.local.port));
          }
          if (s instanceof net.Socket) base = { read: s.bytesRead, written: s.bytesWritten };
        });
        if (idleMs > 0)
          current.setTimeout(idleMs, () =>
            current.destroy(
              Object.assign(new Error(`no byte from the target for ${idleMs} ms`), { code: "ETIMEDOUT" }),
            ),
          );
        // The target's 100 Continue is what the client waits for before sending its body.
        current.on("continue", () => {
          if (!res.headersSent) res.writeContinue();
        });
        current.on("response", (upRes) => {
          const out = endToEndHeaders(upRes.rawHeaders, ["via"]);
          out.push("Via", appendVia(viaOf(upRes.rawHeaders), upRes.httpVersion));
          noteAnswer(record, { status: upRes.statusCode ?? 502, text: "", reply: Reply.SUCCEEDED });
          res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, out);
          pipeline(upRes, metered(record, "bytesDown", lease.throttle?.down), res, (err) => {
            if (err) {
              // Cut off mid-body: the client must not take what it got for the whole.
              record.reason = `target ended the response early: ${err.message}`;
              res.destroy();
              current.destroy();
            }
          });
        });
        current.on("error", (err) => {
          const code = errorCode(err);
          if (mayRetry && bodiless && current.reusedSocket && !res.headersSent && !res.destroyed) {
            if (code === "ECONNRESET" || code === "EPIPE") return send(false);
          }
          if (!res.headersSent) {
            const a: Answer = answerForError(err);
            if (code === "ETIMEDOUT" && !stream)
              a.text = `connect to ${formatAddress(admitted.target)} timed out after ${connectMs} ms (timeouts.connect)`;
            else if (stream) a.text = `the target failed before responding: ${err.message}`;
            noteAnswer(record, a);
            sendAnswer(res, a);
          } else {
            record.reason = `target connection failed mid-response: ${err.message}`;
            res.destroy();
          }
        });
        current.once("close", () => {
          if (up !== current) return;
          upClosed = true;
          done();
        });
        if (bodiless) current.end();
        else
          pipeline(req, metered(record, "bytesUp", lease.throttle?.up), current, (err) => {
            if (err && !current.destroyed) current.destroy(err);
          });
      };
      // The client going away (or our answer done) ends the exchange with the target too.
      res.once("close", () => {
        if (!res.writableFinished && !up.destroyed) up.destroy();
        resClosed = true;
        done();
      });
      send(true);
    });
  } finally {
    lease.release();
  }
}

/** The Via values a message carried. */
function viaOf(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === "via") out.push(raw[i + 1]!);
  return out;
}
