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
    stream.on("readable", this.notify);
    stream.on("end", this.onEnd);
    stream.on("close", this.onEnd);
    stream.on("error", this.onError);
  }

  private readonly onEnd = (): void => {
    this.ended = true;
    this.notify();
  };

  private readonly onError = (err: Error): void => {
    this.failure = err;
    this.notify();
  };

  private readonly notify = (): void => {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  };

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
    this.stream.off("readable", this.notify);
    this.stream.off("end", this.onEnd);
    this.stream.off("close", this.onEnd);
    this.stream.off("error", this.onError);
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
