import type { Duplex } from "node:stream";
import type { Parser } from "../protocol/parse.js";

/** The peer closed or the stream failed before a whole message arrived. */
export class StreamClosedError extends Error {
  override name = "StreamClosedError";
}

/**
 * Reads whole protocol messages from a stream, one parser at a time, so a handshake can be
 * written as straight-line code (server and client alike). It pulls with `stream.read()` only
 * when the parser needs more bytes, so nothing is consumed past need: the end of the stream is
 * noticed only when a message is incomplete. Bytes past the last message are handed on through
 * `release()` (the relay writes them first) or `handBack()` (put back into the stream, for a
 * caller that reads the stream itself).
 */
export class StreamReader {
  private buffer: Buffer = Buffer.alloc(0);
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly stream: Duplex,
    private readonly maxBuffered = 64 * 1024,
  ) {
    // One reader per stream at a time: the listeners below reach it through this property.
    if ((stream as ReaderStream)[READER]) throw new Error("this stream already has a StreamReader");
    (stream as ReaderStream)[READER] = this;
    stream.on("readable", onReadable);
    stream.on("end", onEnd);
    stream.on("close", onEnd);
    stream.on("error", onError);
  }

  /** @internal the stream ended or closed. */
  noteEnd(): void {
    this.ended = true;
    this.notify();
  }

  /** @internal the stream failed. */
  noteError(err: Error): void {
    this.failure = err;
    this.notify();
  }

  /** @internal wakes a pending read. */
  notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  async read<T>(parse: Parser<T>): Promise<T> {
    for (;;) {
      if (this.buffer.length > 0) {
        const parsed = parse(this.buffer);
        if (parsed) {
          this.buffer = this.buffer.subarray(parsed.consumed);
          return parsed.value;
        }
        if (this.buffer.length >= this.maxBuffered) throw new StreamClosedError("message too large");
      }
      const chunk = this.stream.read() as Buffer | null;
      if (chunk !== null) {
        this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
        continue;
      }
      if (this.failure) throw new StreamClosedError(this.failure.message);
      if (this.ended) throw new StreamClosedError("peer closed the connection mid-message");
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private detach(): void {
    const stream = this.stream as ReaderStream;
    if (stream[READER] === this) stream[READER] = undefined;
    stream.off("readable", onReadable);
    stream.off("end", onEnd);
    stream.off("close", onEnd);
    stream.off("error", onError);
  }

  /**
   * Bytes that arrived early. Stops listening; the stream is not flowing, so nothing is lost
   * until the next owner reads or resumes it.
   */
  release(): Buffer {
    this.detach();
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }

  /** Stops listening and puts early bytes back at the front of the stream for its next reader. */
  handBack(): void {
    const rest = this.release();
    if (rest.length > 0) this.stream.unshift(rest);
  }

  /** True once the peer half-closed: anything not buffered will never come. */
  get peerEnded(): boolean {
    return this.ended;
  }
}

// Shared by every reader (a server holds thousands of sessions): each finds its reader through
// the stream that emitted, instead of being closures made per reader.
const READER = Symbol("ferry.reader");
type ReaderStream = Duplex & { [READER]?: StreamReader };

function onReadable(this: ReaderStream): void {
  this[READER]?.notify();
}

function onEnd(this: ReaderStream): void {
  this[READER]?.noteEnd();
}

function onError(this: ReaderStream, err: Error): void {
  this[READER]?.noteError(err);
}
