import { type ServerResponse, STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { replyForError } from "../../dial/errors.js";
import { Reply, replyName } from "../../protocol/errors.js";
import type { SessionRecord } from "../context.js";
import { closeAfterReply } from "../replier.js";

/** A request the proxy answers itself: the status, a short text saying what happened, extra headers. */
export interface Answer {
  status: number;
  text: string;
  headers?: Record<string, string>;
  /** The SOCKS5 reply a SOCKS client would have had: logs and metrics read both protocols alike. */
  reply: number;
  /** For the record when it says more than the client may read (which password check failed). */
  reason?: string;
}

/** A policy refusal, a dial failure or any error from the outbound path, as HTTP says it. */
export function answerForError(err: unknown): Answer {
  const reply = replyForError(err);
  const text = (err as Error).message;
  switch (reply) {
    case Reply.NOT_ALLOWED:
      return { status: 403, text, reply };
    case Reply.TTL_EXPIRED:
      return { status: 504, text, reply };
    default:
      return { status: 502, text, reply };
  }
}

/** Notes the answer in the record (reply, status, and the reason unless one is set). */
export function noteAnswer(record: SessionRecord, a: Answer): void {
  record.reply = a.reply;
  record.status = a.status;
  record.replyName = `${a.status} ${STATUS_CODES[a.status] ?? ""} (${replyName(a.reply)})`;
  if (!record.reason && a.status >= 300) record.reason = a.reason ?? a.text;
}

function body(a: Answer): string {
  return `ferry: ${a.text}\n`;
}

/** On a request whose response has not started: the answer, the connection kept when HTTP allows. */
export function sendAnswer(res: ServerResponse, a: Answer): void {
  const text = body(a);
  res.writeHead(a.status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    ...a.headers,
  });
  res.end(text);
}

/** On a raw connection (after CONNECT, or a request llhttp refused): the answer, then a close. */
export function sendAnswerAndClose(stream: Duplex, a: Answer): void {
  const text = body(a);
  const head = [`HTTP/1.1 ${a.status} ${STATUS_CODES[a.status] ?? "Error"}`];
  head.push("Content-Type: text/plain; charset=utf-8", `Content-Length: ${Buffer.byteLength(text)}`);
  for (const [k, v] of Object.entries(a.headers ?? {})) head.push(`${k}: ${v}`);
  head.push("Connection: close");
  closeAfterReply(stream, Buffer.from(`${head.join("\r\n")}\r\n\r\n${text}`, "utf8"));
}
