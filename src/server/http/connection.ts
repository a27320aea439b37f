import http from "node:http";
import type { Duplex } from "node:stream";
import type { Config } from "../../config/schema.js";
import { Hangup } from "../../dial/hangup.js";
import { formatAddress } from "../../protocol/address.js";
import { Reply } from "../../protocol/errors.js";
import { HttpRequestError, parseProxyTarget } from "../../protocol/http-proxy.js";
import type { ServerContext, SessionRecord } from "../context.js";
import type { SessionPhases } from "../session.js";
import { type Answer, noteAnswer, sendAnswer, sendAnswerAndClose } from "./answer.js";
import { forwardRequest } from "./forward.js";
import type { LoginMemo } from "./login.js";
import { tunnel } from "./tunnel.js";
import { TargetAgent } from "./upstream.js";

/** Request heads larger than this are answered 431 (llhttp counts the whole head). */
export const MAX_HEAD_BYTES = 16 * 1024;

const CONNECTION = Symbol("ferry.http.connection");
type Carrier = Duplex & { [CONNECTION]?: HttpConnection };

/**
 * Serves an HTTP proxy client on `stream` until it closes: CONNECT tunnels and absolute-URI
 * requests forwarded with keep-alive. `head` is what was read from the stream already (the bytes
 * the protocol was sniffed from), parsed first. Any connected stream will do: a TCP socket, or
 * a TLS socket for an HTTPS proxy. Resolves once the stream has closed; never rejects. Each
 * request gets its own record (phases.next), the first the one passed in.
 */
export function serveHttpProxy(
  stream: Duplex,
  head: Buffer,
  ctx: ServerContext,
  record: SessionRecord,
  phases?: SessionPhases,
): Promise<void> {
  return new Promise((resolve) => {
    const conn = new HttpConnection(stream, ctx, record, phases);
    (stream as Carrier)[CONNECTION] = conn;
    stream.on("error", () => {});
    stream.once("close", () => {
      conn.close();
      resolve();
    });
    if (stream.destroyed) {
      conn.close();
      resolve();
      return;
    }
    if (head.length > 0) stream.unshift(head);
    conn.awaitHead(ctx.config.timeouts.handshake, "handshake");
    frontFor(ctx.config).emit("connection", stream);
  });
}

/** One client connection's state, found by llhttp's callbacks through the stream. */
export class HttpConnection {
  readonly hangup = new Hangup();
  /** The last Basic login checked here (src/server/http/login.ts). */
  last?: LoginMemo;
  private requests = 0;
  /** Requests read and not yet answered; the head timer runs only when none is. */
  private inFlight = 0;
  /** Requests are handled one at a time, in order (pipelined ones wait their turn). */
  private turn: Promise<void> = Promise.resolve();
  private headTimer: NodeJS.Timeout | undefined;
  private agentMade: TargetAgent | undefined;
  private closed = false;
  /** A CONNECT took the connection over; no request follows. */
  tunnelled = false;

  constructor(
    readonly stream: Duplex,
    readonly ctx: ServerContext,
    public record: SessionRecord,
    private readonly phases?: SessionPhases,
  ) {}

  /** This connection's pool of connections to targets, made on first use. */
  get agent(): TargetAgent {
    this.agentMade ??= new TargetAgent(this.ctx.config.timeouts.idle);
    return this.agentMade;
  }

  /**
   * A complete request head must arrive within `ms` (0: no limit): the handshake timeout for the
   * first, and idle plus handshake after a response, so a client can neither dribble a head nor
   * keep a session slot idle longer than a quiet tunnel could.
   */
  awaitHead(ms: number, what: string): void {
    clearTimeout(this.headTimer);
    this.headTimer = undefined;
    if (ms <= 0 || this.tunnelled || this.inFlight > 0 || this.closed) return;
    this.headTimer = setTimeout(() => {
      if (!this.record.reason) this.record.reason = `no complete HTTP request head within ${ms} ms (${what})`;
      this.stream.destroy();
    }, ms);
  }

  /** Runs `task` for a request that has just been read, after those before it. */
  take(task: () => Promise<void>): void {
    clearTimeout(this.headTimer);
    this.headTimer = undefined;
    this.inFlight++;
    let record = this.record;
    this.turn = this.turn
      .then(() => {
        // The first request keeps the record the connection came with; each later one gets its
        // own when its turn comes (the one before is complete by then).
        if (this.requests++ > 0 && this.phases?.next) this.record = this.phases.next();
        record = this.record;
        record.protocol = "http";
        return task();
      })
      .catch((err: Error) => {
        if (!record.reason) record.reason = err.message;
        this.stream.destroy();
      })
      .finally(() => {
        if (!record.durationMs) record.durationMs = Math.max(1, Date.now() - record.startedAt);
        this.inFlight--;
        const { idle, handshake } = this.ctx.config.timeouts;
        if (idle > 0 && handshake > 0) this.awaitHead(idle + handshake, "timeouts.idle + timeouts.handshake");
      });
  }

  /**
   * The connection's session slot, taken by the first request past its login (server.ts keeps
   * it); later requests only announce their record. Returns which limit refuses, if one does.
   */
  async establish(): Promise<string | undefined> {
    return await this.phases?.established();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.headTimer);
    this.hangup.abort(new Error("the client closed the connection"));
    this.agentMade?.destroy();
  }
}

const fronts = new WeakMap<Config, http.Server>();

/**
 * The HTTP server (Node's, llhttp underneath) that parses for every connection of one
 * configuration. It never listens: connections are handed to it. Timeouts of its own are off
 * (its checks run only on a listening server); HttpConnection.awaitHead bounds heads instead.
 */
function frontFor(config: Config): http.Server {
  let front = fronts.get(config);
  if (front) return front;
  front = http.createServer({
    maxHeaderSize: MAX_HEAD_BYTES,
    // A proxy reads the target from the request line; HTTP/1.0 clients send no Host.
    requireHostHeader: false,
    requestTimeout: 0,
    headersTimeout: 0,
    insecureHTTPParser: false,
  });
  // No byte from the client for this long (a stalled upload, a wait between requests) ends it.
  front.timeout = config.timeouts.idle;
  front.keepAliveTimeout = config.timeouts.idle;
  front.on("request", onRequest);
  // Expect: 100-continue goes to the target, whose 100 is passed back (forward.ts).
  front.on("checkContinue", onRequest);
  front.on("connect", onConnect);
  front.on("clientError", onClientError);
  fronts.set(config, front);
  return front;
}

function connectionOf(stream: Duplex): HttpConnection | undefined {
  return (stream as Carrier)[CONNECTION];
}

function onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
  const conn = connectionOf(req.socket);
  if (!conn) {
    req.socket.destroy();
    return;
  }
  conn.take(async () => {
    const record = conn.record;
    let parsed: ReturnType<typeof parseProxyTarget>;
    try {
      parsed = parseProxyTarget(req.method ?? "", req.url ?? "");
    } catch (err) {
      if (!(err instanceof HttpRequestError)) throw err;
      record.command = "http";
      const a: Answer = { status: err.status, text: err.message, reply: Reply.GENERAL_FAILURE };
      noteAnswer(record, a);
      sendAnswer(res, a);
      await finished(res);
      return;
    }
    record.command = "http";
    record.target = formatAddress(parsed.target);
    if (parsed.kind !== "forward") throw new Error("CONNECT reached the request handler");
    await forwardRequest(conn, req, res, parsed.target, parsed.path);
  });
}

function onConnect(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
  const conn = connectionOf(socket);
  if (!conn) {
    socket.destroy();
    return;
  }
  conn.tunnelled = true;
  conn.take(async () => {
    const record = conn.record;
    record.command = "connect";
    let target: ReturnType<typeof parseProxyTarget>["target"];
    try {
      target = parseProxyTarget("CONNECT", req.url ?? "").target;
    } catch (err) {
      if (!(err instanceof HttpRequestError)) throw err;
      const a: Answer = { status: err.status, text: err.message, reply: Reply.GENERAL_FAILURE };
      noteAnswer(record, a);
      sendAnswerAndClose(socket, a);
      return;
    }
    record.target = formatAddress(target);
    await tunnel(conn, req, socket, head, target);
  });
}

/** Connections answered after a parse error: llhttp reports every later chunk again. */
const refusedOnce = new WeakSet<Duplex>();

/** What llhttp refused (a head too large, a malformed or ambiguous message): 4xx, then a close. */
function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (refusedOnce.has(socket)) return;
  refusedOnce.add(socket);
  const conn = connectionOf(socket);
  const record = conn?.record;
  const code = err.code ?? "";
  if (record && !record.reason) record.reason = `HTTP request refused by the parser: ${code} ${err.message}`;
  if (record) record.protocol = "http";
  const inFlight = (socket as Duplex & { _httpMessage?: http.ServerResponse })._httpMessage;
  if (socket.destroyed || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const status = code === "HPE_HEADER_OVERFLOW" ? 431 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
  const a: Answer = {
    status,
    reply: Reply.GENERAL_FAILURE,
    text:
      status === 431
        ? `request head larger than ${MAX_HEAD_BYTES} bytes`
        : `malformed HTTP request (${err.message.replace(/\s+/g, " ").slice(0, 120)})`,
  };
  if (record && record.status === undefined) noteAnswer(record, a);
  sendAnswerAndClose(socket, a);
}

/** Resolves when the response has been handed to the stream, or the stream has gone. */
export function finished(res: http.ServerResponse): Promise<void> {
  if (res.writableFinished || res.destroyed) return Promise.resolve();
  return new Promise((resolve) => res.once("close", () => resolve()));
}
