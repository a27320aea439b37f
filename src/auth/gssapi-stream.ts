import { Duplex } from "node:stream";
import { ProtocolError } from "../protocol/errors.js";
import {
  encodeGssMessage,
  GSSAPI_MAX_TOKEN,
  GSSAPI_VERSION,
  GssMessageType,
  parseGssMessage,
} from "../protocol/gssapi.js";
import type { GssContext } from "./gssapi-native.js";

/** Per-message protection at the agreed level (RFC 1961 §5): integrity or confidentiality. */
export interface GssProtector {
  readonly level: "integrity" | "confidentiality";
  /** The largest plaintext whose token fits the 16-bit LEN field. */
  readonly maxChunk: number;
  /** One token, on the calling thread (datagrams). */
  wrap(data: Buffer): Buffer;
  /**
   * `data` (Buffers taken as one run) as RFC 1961 data messages, one Buffer each, sealed in the
   * thread pool; hand each to releaseFrame once written.
   */
  wrapFrames(data: Buffer | Buffer[]): Promise<Buffer[]>;
  /** Unwraps whole data messages in place (Buffers read as one run), in the thread pool; resolves with the plaintext's pieces. */
  unwrapFrames(run: Buffer[]): Promise<Buffer[]>;
  /** Unwraps a datagram token: loss and reordering are tolerated, replays are not. */
  unwrapDatagram(token: Buffer): Buffer;
  dispose(): void;
}

/** The largest RFC 1961 data message: its header and the largest token LEN can say. */
const MAX_FRAME = 4 + GSSAPI_MAX_TOKEN;

/**
 * Frame Buffers that the socket has finished with, for the next messages: a fresh 64 KiB Buffer
 * costs more in page faults than sealing the data in it (measured: bench:gssapi, proxy CPU per
 * MiB). Shared by every session, and bounded.
 */
const framePool: Buffer[] = [];

/**
 * Batches of up to two whole messages are sealed or opened on the event loop (with OpenSSL,
 * measured: 0.07-0.22 ms median, under 0.4 ms at p99), larger ones in the thread pool. A pool
 * round trip costs more than that on a busy core: with every full-size message sent to the pool,
 * a proxy pinned to one core carried 0.6-0.7x Dante's throughput at integrity; with this,
 * 1.0-1.3x (bench:gssapi). A peer sending small tokens (Dante's client: two per write) would
 * otherwise pay it for each.
 */
const INLINE_BYTES = 2 * MAX_FRAME;

/** Reads shorter than this are copied together; a bulk read is 64 KiB. */
const SMALL_READ = 4096;
const TAIL_BYTES = 64 * 1024;
const FRAME_POOL_MAX = 32;

function frameBuffer(): Buffer {
  return framePool.pop() ?? Buffer.allocUnsafe(MAX_FRAME);
}

/** Gives back a frame from wrapFrames once nothing reads it any more (its write has completed). */
function releaseFrame(frame: Buffer): void {
  if (framePool.length < FRAME_POOL_MAX && frame.byteOffset === 0 && frame.buffer.byteLength === MAX_FRAME)
    framePool.push(Buffer.from(frame.buffer, 0, MAX_FRAME));
}

/**
 * RFC 1961 §5: at integrity conf_req_flag is always false, at confidentiality always true, and a
 * token that says otherwise is refused (a downgrade, or a peer that ignores the agreement).
 */
function levelMismatch(conf: boolean, confidential: boolean): ProtocolError | undefined {
  if (conf && !confidential)
    return new ProtocolError("GSSAPI: a message arrived without the agreed confidentiality");
  if (!conf && confidential)
    return new ProtocolError("GSSAPI: a message arrived encrypted, but integrity (no encryption) was agreed");
  return undefined;
}

export function gssProtector(ctx: GssContext, level: "integrity" | "confidentiality"): GssProtector {
  const conf = level === "confidentiality";
  const maxChunk = ctx.wrapSizeLimit(GSSAPI_MAX_TOKEN, conf);
  if (maxChunk < 1)
    throw new Error(`GSSAPI: the mechanism leaves no room for data in a ${GSSAPI_MAX_TOKEN}-byte token`);
  const check = (r: { data: Buffer; confidential: boolean }): Buffer => {
    const mismatch = levelMismatch(conf, r.confidential);
    if (mismatch) throw mismatch;
    return r.data;
  };
  return {
    level,
    maxChunk,
    wrap: (data) => ctx.wrap(data, conf),
    wrapFrames: async (data) => {
      const length = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.length;
      // One Buffer per message, room for the largest: the add-on refuses a token LEN cannot hold.
      const outs: Buffer[] = [];
      for (let at = 0; at < length; at += maxChunk) outs.push(frameBuffer());
      const used = await ctx.wrapFrames(data, outs, maxChunk, conf, length <= INLINE_BYTES);
      return used.map((n, i) => outs[i]!.subarray(0, n));
    },
    unwrapFrames: async (run) => {
      const bytes = run.reduce((n, b) => n + b.length, 0);
      const spans = await ctx.unwrapFrames(run, conf, bytes <= INLINE_BYTES);
      const out: Buffer[] = [];
      for (let i = 0; i < spans.length; i += 3) {
        const start = spans[i + 1]!;
        out.push(run[spans[i]!]!.subarray(start, start + spans[i + 2]!));
      }
      return out;
    },
    unwrapDatagram: (token) => check(ctx.unwrap(token, false)),
    dispose: () => ctx.dispose(),
  };
}

/**
 * Wraps a datagram's payload (an RFC 1928 UDP request or reply, header included) as RFC 1961
 * asks for associations: the whole datagram becomes one framed, protected token.
 */
export function wrapDatagram(protector: GssProtector, datagram: Buffer): Buffer {
  if (datagram.length > protector.maxChunk) {
    throw new RangeError(
      `datagram of ${datagram.length} bytes exceeds the GSSAPI limit of ${protector.maxChunk}`,
    );
  }
  return encodeGssMessage({ type: "data", token: protector.wrap(datagram) });
}

/** The inverse of wrapDatagram; throws ProtocolError (or the GSS-API error) on anything else. */
export function unwrapDatagram(protector: GssProtector, packet: Buffer): Buffer {
  const parsed = parseGssMessage(packet);
  if (!parsed || parsed.consumed !== packet.length || parsed.value.type !== "data") {
    throw new ProtocolError("not one whole GSSAPI-encapsulated datagram");
  }
  return protector.unwrapDatagram(parsed.value.token);
}

/** Why a stream's next message, which starts with `head` (one or two bytes), is not a data message. */
function notData(head: Buffer): Error {
  try {
    const parsed = parseGssMessage(head);
    if (parsed?.value.type === "abort") return new Error("GSSAPI: the peer aborted the GSSAPI session");
    const type = head[1] === GssMessageType.AUTH ? "auth" : "protection";
    return new Error(`GSSAPI: expected encapsulated data, got a GSSAPI ${type} message`);
  } catch (err) {
    return new Error(`GSSAPI: ${(err as Error).message}`);
  }
}

/**
 * The connection after a GSSAPI handshake with integrity or confidentiality: every write is cut
 * to the wrap size limit, wrapped and framed; every frame read is unwrapped. Request, reply and
 * relay run over it as over a socket (half-close, backpressure, idle timeout included). Wrapping
 * and unwrapping run in the thread pool, one batch at a time each way, so order is kept.
 */
export class GssEncapsulation extends Duplex {
  /** Bytes read and not yet unwrapped, in arrival order. */
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Where small reads are gathered (see add). */
  private tail: Buffer | undefined;
  private tailUsed = 0;
  private unwrapping = false;
  /** False once our reader is full: no new batch until it asks for more. */
  private flowing = true;
  private innerEnded = false;

  constructor(
    private readonly inner: Duplex,
    /** Also what a UDP association of this session wraps its datagrams with (wrapDatagram). */
    readonly protector: GssProtector,
    leftover: Buffer = Buffer.alloc(0),
  ) {
    super({ allowHalfOpen: true });
    if (leftover.length > 0) this.add(leftover);
    inner.on("data", (chunk: Buffer) => {
      this.add(chunk);
      this.pump();
    });
    inner.on("end", () => {
      this.innerEnded = true;
      this.pump();
    });
    inner.on("error", (err) => this.destroy(err));
    inner.on("close", () => {
      if (!this.destroyed && !this.innerEnded) this.destroy();
    });
  }

  /**
   * Keeps a read. Small reads are copied into a shared tail Buffer: a peer that dribbles a message
   * a few bytes at a time must not cost a Buffer (and an array slot) per read.
   */
  private add(chunk: Buffer): void {
    this.buffered += chunk.length;
    if (chunk.length >= SMALL_READ) {
      this.chunks.push(chunk);
      this.tail = undefined;
      return;
    }
    let tail = this.tail;
    if (!tail || this.tailUsed + chunk.length > tail.length) {
      tail = this.tail = Buffer.allocUnsafe(TAIL_BYTES);
      this.tailUsed = 0;
    }
    chunk.copy(tail, this.tailUsed);
    const last = this.chunks[this.chunks.length - 1];
    // The last chunk is the tail's unread part when it ends where the tail's bytes end.
    const growsLast =
      last !== undefined &&
      last.buffer === tail.buffer &&
      last.byteOffset + last.length === tail.byteOffset + this.tailUsed;
    const start = growsLast ? last.byteOffset - tail.byteOffset : this.tailUsed;
    this.tailUsed += chunk.length;
    const view = tail.subarray(start, this.tailUsed);
    if (growsLast) this.chunks[this.chunks.length - 1] = view;
    else this.chunks.push(view);
  }

  /** The `n` bytes buffered from offset `at` (at + n <= buffered): a view when one chunk holds them. */
  private bytesAt(at: number, n: number): Buffer {
    let i = 0;
    while (at >= this.chunks[i]!.length) at -= this.chunks[i++]!.length;
    const chunk = this.chunks[i]!;
    if (chunk.length - at >= n) return chunk.subarray(at, at + n);
    // A few bytes across chunks (a message header split by a read).
    const out = Buffer.allocUnsafe(n);
    for (let got = 0; got < n; i++, at = 0) got += this.chunks[i]!.copy(out, got, at, at + n - got);
    return out;
  }

  /** How many of the bytes buffered are whole data messages, from the head on. */
  private wholeDataMessages(): number {
    let at = 0;
    while (this.buffered - at >= 4) {
      const head = this.bytesAt(at, 4);
      if (head[0] !== GSSAPI_VERSION || head[1] !== GssMessageType.DATA) break;
      const length = 4 + head.readUInt16BE(2);
      if (this.buffered - at < length) break;
      at += length;
    }
    return at;
  }

  /** Removes the first `n` buffered bytes, as the chunks (views) that held them. */
  private takeChunks(n: number): Buffer[] {
    this.buffered -= n;
    let whole = 0;
    while (whole < this.chunks.length && this.chunks[whole]!.length <= n) n -= this.chunks[whole++]!.length;
    const run = this.chunks.splice(0, whole);
    if (n > 0) {
      const chunk = this.chunks[0]!;
      run.push(chunk.subarray(0, n));
      this.chunks[0] = chunk.subarray(n);
    }
    return run;
  }

  /**
   * Starts unwrapping the whole messages read, where they lie in the chunks read (the add-on
   * handles a message split across chunks), or ends the stream when nothing more can come.
   */
  private pump(): void {
    if (this.unwrapping || this.destroyed) return;
    const whole = this.wholeDataMessages();
    if (whole === 0) {
      this.stopAtHead();
      return;
    }
    if (!this.flowing) return;
    this.unwrapping = true;
    this.protector.unwrapFrames(this.takeChunks(whole)).then(
      (pieces) => {
        this.unwrapping = false;
        if (this.destroyed) return;
        for (const piece of pieces) {
          if (piece.length > 0 && !this.push(piece)) this.flowing = false;
        }
        if (!this.flowing) this.inner.pause();
        this.pump();
      },
      (err: Error) => {
        this.unwrapping = false;
        this.destroy(err.message.startsWith("GSSAPI") ? err : new Error(`GSSAPI: ${err.message}`));
      },
    );
  }

  /**
   * No whole data message at the head: wait for more, or fail on anything else, or end. The first
   * two bytes say whether the head is a data message; anything else fails at once, without
   * waiting (and re-reading) for the rest of a message that is refused anyway.
   */
  private stopAtHead(): void {
    const head = this.buffered > 0 ? this.bytesAt(0, Math.min(2, this.buffered)) : undefined;
    if (head && (head[0] !== GSSAPI_VERSION || (head.length > 1 && head[1] !== GssMessageType.DATA))) {
      this.destroy(notData(head));
      return;
    }
    if (!this.innerEnded) return;
    if (this.buffered > 0) {
      this.destroy(new Error(`GSSAPI: connection ended inside a message (${this.buffered} bytes left)`));
      return;
    }
    this.push(null);
  }

  override _read(): void {
    this.flowing = true;
    if (!this.innerEnded) this.inner.resume();
    this.pump();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.wrapAndSend(chunk, chunk.length, callback);
  }

  /** Writes queued while a wrap ran go out together, so they fill whole tokens. */
  override _writev(
    chunks: { chunk: Buffer; encoding: BufferEncoding }[],
    callback: (err?: Error | null) => void,
  ): void {
    const buffers = chunks.map((c) => c.chunk);
    this.wrapAndSend(
      buffers,
      buffers.reduce((n, b) => n + b.length, 0),
      callback,
    );
  }

  private wrapAndSend(data: Buffer | Buffer[], length: number, callback: (err?: Error | null) => void): void {
    if (length === 0) {
      callback();
      return;
    }
    this.protector.wrapFrames(data).then(
      (frames) => {
        if (this.destroyed) {
          for (const frame of frames) releaseFrame(frame);
          callback();
          return;
        }
        // Corked, the messages leave in one writev.
        this.inner.cork();
        let ok = true;
        for (const frame of frames) ok = this.inner.write(frame, () => releaseFrame(frame));
        this.inner.uncork();
        if (ok) callback();
        else this.inner.once("drain", () => callback());
      },
      (err: Error) => callback(err),
    );
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.inner.end(() => callback());
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.inner.destroy();
    this.protector.dispose();
    callback(err);
  }

  /** Lets the relay's idle timeout reach the socket underneath. */
  setTimeout(ms: number, cb?: () => void): this {
    const sock = this.inner as Duplex & { setTimeout?: (ms: number, cb?: () => void) => void };
    sock.setTimeout?.(ms, cb);
    return this;
  }
}
