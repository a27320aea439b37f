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
  /** `data` (Buffers taken as one run) as framed RFC 1961 data messages, sealed in the thread pool. */
  wrapFrames(data: Buffer | Buffer[]): Promise<Buffer>;
  /** Unwraps whole data messages in place, in the thread pool; resolves with each plaintext. */
  unwrapFrames(frames: Buffer): Promise<Buffer[]>;
  /** Unwraps a datagram token: loss and reordering are tolerated, replays are not. */
  unwrapDatagram(token: Buffer): Buffer;
  dispose(): void;
}

/** Room for a piece's token beyond its plaintext, on top of what gss_wrap_size_limit leaves. */
const WRAP_SLACK = 64;

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
  // Per piece: the frame header, the token's own overhead at the largest piece, and some slack
  // for mechanisms that pad to a block.
  const perPiece = 4 + (GSSAPI_MAX_TOKEN - maxChunk) + WRAP_SLACK;
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
      const out = Buffer.allocUnsafe(length + Math.ceil(length / maxChunk) * perPiece);
      const used = await ctx.wrapFrames(data, out, maxChunk, conf);
      return out.subarray(0, used);
    },
    unwrapFrames: async (frames) => {
      const spans = await ctx.unwrapFrames(frames, conf);
      const out: Buffer[] = [];
      for (let i = 0; i < spans.length; i += 2)
        out.push(frames.subarray(spans[i]!, spans[i]! + spans[i + 1]!));
      return out;
    },
    unwrapDatagram: (token) => check(ctx.unwrap(token, false)),
    dispose: () => ctx.dispose(),
  };
}

/** The length of the leading run of whole RFC 1961 data messages in `buf`. */
function wholeDataMessages(buf: Buffer): number {
  let at = 0;
  while (buf.length - at >= 4 && buf[at] === GSSAPI_VERSION && buf[at + 1] === GssMessageType.DATA) {
    const len = buf.readUInt16BE(at + 2);
    if (buf.length - at - 4 < len) break;
    at += 4 + len;
  }
  return at;
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

  private add(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** Starts unwrapping the whole frames buffered, or ends the stream when nothing more can come. */
  private pump(): void {
    if (this.unwrapping || this.destroyed) return;
    const pending = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const end = wholeDataMessages(pending);
    if (end === 0) {
      this.chunks = pending.length > 0 ? [pending] : [];
      this.stopAtHead(pending);
      return;
    }
    if (!this.flowing) {
      this.chunks = [pending];
      return;
    }
    const rest = pending.subarray(end);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    this.unwrapping = true;
    this.protector.unwrapFrames(pending.subarray(0, end)).then(
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

  /** No whole data message at the head: wait for more, or fail on anything else, or end. */
  private stopAtHead(pending: Buffer): void {
    try {
      const parsed = pending.length > 0 ? parseGssMessage(pending) : undefined;
      if (parsed) {
        const msg = parsed.value;
        if (msg.type === "abort") throw new ProtocolError("the peer aborted the GSSAPI session");
        throw new ProtocolError(`expected encapsulated data, got a GSSAPI ${msg.type} message`);
      }
    } catch (err) {
      const e = err as Error;
      this.destroy(e.message.startsWith("GSSAPI") ? e : new Error(`GSSAPI: ${e.message}`));
      return;
    }
    if (!this.innerEnded) return;
    if (pending.length > 0) {
      this.destroy(new Error(`GSSAPI: connection ended inside a message (${pending.length} bytes left)`));
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
      (framed) => {
        if (this.destroyed) callback();
        else if (this.inner.write(framed)) callback();
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
