import { Duplex } from "node:stream";
import { ProtocolError } from "../protocol/errors.js";
import { encodeGssMessage, GSSAPI_MAX_TOKEN, parseGssMessage } from "../protocol/gssapi.js";
import type { GssContext } from "./gssapi-native.js";

/** Per-message protection at the agreed level (RFC 1961 §5): integrity or confidentiality. */
export interface GssProtector {
  readonly level: "integrity" | "confidentiality";
  /** The largest plaintext whose token fits the 16-bit LEN field. */
  readonly maxChunk: number;
  wrap(data: Buffer): Buffer;
  /** Unwraps a stream token: in order, and confidential when confidentiality was agreed. */
  unwrap(token: Buffer): Buffer;
  /** Unwraps a datagram token: loss and reordering are tolerated, replays are not. */
  unwrapDatagram(token: Buffer): Buffer;
  dispose(): void;
}

export function gssProtector(ctx: GssContext, level: "integrity" | "confidentiality"): GssProtector {
  const conf = level === "confidentiality";
  const maxChunk = ctx.wrapSizeLimit(GSSAPI_MAX_TOKEN, conf);
  if (maxChunk < 1)
    throw new Error(`GSSAPI: the mechanism leaves no room for data in a ${GSSAPI_MAX_TOKEN}-byte token`);
  const check = (r: { data: Buffer; confidential: boolean }): Buffer => {
    // A peer (or a man in the middle) must not downgrade an agreed confidentiality level.
    if (conf && !r.confidential)
      throw new ProtocolError("GSSAPI: a message arrived without the agreed confidentiality");
    return r.data;
  };
  return {
    level,
    maxChunk,
    wrap: (data) => ctx.wrap(data, conf),
    unwrap: (token) => check(ctx.unwrap(token)),
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

/**
 * The connection after a GSSAPI handshake with integrity or confidentiality: every write is cut
 * to the wrap size limit, wrapped and framed; every frame read is unwrapped. Request, reply and
 * relay run over it as over a socket (half-close, backpressure, idle timeout included).
 */
export class GssEncapsulation extends Duplex {
  private pending: Buffer;
  private innerEnded = false;

  constructor(
    private readonly inner: Duplex,
    /** Also what a UDP association of this session wraps its datagrams with (wrapDatagram). */
    readonly protector: GssProtector,
    leftover: Buffer = Buffer.alloc(0),
  ) {
    super({ allowHalfOpen: true });
    this.pending = leftover;
    inner.on("data", this.onData);
    inner.on("end", this.onEnd);
    inner.on("error", (err) => this.destroy(err));
    inner.on("close", () => {
      if (!this.destroyed && !this.innerEnded) this.destroy();
    });
  }

  private readonly onData = (chunk: Buffer): void => {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.drainFrames();
  };

  private readonly onEnd = (): void => {
    this.innerEnded = true;
    this.drainFrames();
    if (this.destroyed) return;
    if (this.pending.length > 0) {
      this.destroy(
        new Error(`GSSAPI: connection ended inside a message (${this.pending.length} bytes left)`),
      );
      return;
    }
    this.push(null);
  };

  /** Unwraps every whole frame buffered; pauses the socket when our reader is full. */
  private drainFrames(): void {
    try {
      for (;;) {
        const parsed = parseGssMessage(this.pending);
        if (!parsed) return;
        this.pending = this.pending.subarray(parsed.consumed);
        const msg = parsed.value;
        if (msg.type === "abort") throw new ProtocolError("the peer aborted the GSSAPI session");
        if (msg.type !== "data")
          throw new ProtocolError(`expected encapsulated data, got a GSSAPI ${msg.type} message`);
        const data = this.protector.unwrap(msg.token);
        if (data.length > 0 && !this.push(data)) this.inner.pause();
      }
    } catch (err) {
      const e = err as Error;
      this.destroy(e.message.startsWith("GSSAPI") ? e : new Error(`GSSAPI: ${e.message}`));
    }
  }

  override _read(): void {
    if (this.pending.length > 0) this.drainFrames();
    if (!this.innerEnded) this.inner.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    let framed: Buffer[];
    try {
      framed = [];
      for (let at = 0; at < chunk.length; at += this.protector.maxChunk) {
        const piece = chunk.subarray(at, at + this.protector.maxChunk);
        framed.push(encodeGssMessage({ type: "data", token: this.protector.wrap(piece) }));
      }
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (this.inner.write(framed.length === 1 ? framed[0]! : Buffer.concat(framed))) callback();
    else this.inner.once("drain", () => callback());
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
