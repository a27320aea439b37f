import net from "node:net";
import type { Duplex } from "node:stream";
import { resetBehindEnd } from "../io/peer-reset.js";
import { giveReadBuffer, takeReadBuffer } from "../io/read-buffers.js";
import { readIntoOwnBuffers } from "../io/read-into.js";
import type { Throttle, TokenBucket } from "./limits.js";

export interface RelayOptions {
  /** Client bytes that arrived with or after the request: delivered to the target first. */
  leftover?: Buffer;
  /** The client already half-closed before the relay started. */
  clientEnded?: boolean;
  /** Close both sides after this long with no byte in either direction (0: never). */
  idleTimeoutMs?: number;
  /** Bandwidth limits; when absent the relay runs its plain path with no per-chunk accounting. */
  throttle?: Throttle;
  /**
   * Counted into as bytes pass, so that what the session has moved can be read while it runs
   * (the admin page, metrics, quotas); the result carries the relay's own totals as well.
   */
  tally?: Tally;
  /**
   * A quota both directions count into (src/server/quotas.ts); when it says so, the relay is
   * cut. Like a throttle, it puts the relay on its accounting path; absent, the plain path runs.
   */
  meter?: Meter;
}

/** Counts bytes as they pass; returns why the relay must end now, if it must. */
export interface Meter {
  count(n: number): string | undefined;
}

/** Bytes moved each way, kept up to date while a relay runs. */
export interface Tally {
  bytesUp: number;
  bytesDown: number;
}

export interface RelayResult {
  /** Bytes client → target. */
  bytesUp: number;
  /** Bytes target → client. */
  bytesDown: number;
  /** "completed" when both sides closed cleanly; otherwise what ended the relay. */
  reason: string;
}

/**
 * Pumps bytes both ways until both directions have finished. Backpressure is honoured in each
 * direction (a slow reader pauses the fast writer), a FIN from one side is passed on while the
 * other direction keeps flowing, and an error or reset on either side destroys both.
 * Both streams must be created with allowHalfOpen so Node does not end them for us.
 */
export function relay(client: Duplex, target: Duplex, options: RelayOptions = {}): Promise<RelayResult> {
  return new Promise((resolve) => new Relay(client, target, options, resolve).start(options));
}

// A relay holds thousands of idle connections, so it is built to keep little per connection: the
// listeners below are shared by every relay and find their state through a property of the
// stream that emitted (`this`), instead of being closures made for each connection.
const FLOW = Symbol("ferry.relay.flow");
type RelayedStream = Duplex & { [FLOW]?: Flow };

/** One direction: bytes read from `src` are written to `dst`. */
class Flow {
  /** The opposite direction, which writes to our `src`. */
  reverse!: Flow;
  bytes = 0;
  /** Paused because `dst` is full, until it drains. */
  draining = false;
  /** Paused because a bucket is in debt, until `restTimer` fires. */
  resting = false;
  restTimer: NodeJS.Timeout | undefined;
  /**
   * Bulk mode: `src` reads into these buffers of ours instead of a fresh allocation per read,
   * into the one at `reading`: two, so that one read can go on while a write holds the other.
   */
  buffers: Buffer[] | undefined;
  reading = 0;
  /** Bulk mode: paused because `dst` still holds bytes of both buffers, until they are written. */
  flushing = false;
  /** Bulk mode: the callback of every write, which ends `flushing`. */
  afterWrite: (() => void) | undefined;

  constructor(
    readonly relay: Relay,
    readonly name: "client" | "target",
    readonly src: RelayedStream,
    readonly dst: Duplex,
    readonly buckets: TokenBucket[] | undefined,
    readonly tally: Tally,
    readonly tallyKey: keyof Tally,
    readonly meter: Meter | undefined,
  ) {}
}

/** Where a relay started without a tally counts: shared, written and never read. */
const DISCARDED: Tally = { bytesUp: 0, bytesDown: 0 };

class Relay {
  readonly up: Flow;
  readonly down: Flow;
  reason = "completed";
  failed = false;
  finished = 0;
  closed = 0;
  readonly idleMs: number;
  lastActivity = 0;
  idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly client: RelayedStream,
    readonly target: RelayedStream,
    options: RelayOptions,
    readonly resolve: (result: RelayResult) => void,
  ) {
    const tally = options.tally ?? DISCARDED;
    const { throttle, meter } = options;
    // A meter without a throttle still takes the accounting path, with no bucket in it.
    const up = throttle?.up ?? (meter && []);
    const down = throttle?.down ?? (meter && []);
    this.up = new Flow(this, "client", client, target, up, tally, "bytesUp", meter);
    this.down = new Flow(this, "target", target, client, down, tally, "bytesDown", meter);
    this.up.reverse = this.down;
    this.down.reverse = this.up;
    this.idleMs = options.idleTimeoutMs ?? 0;
  }

  start(options: RelayOptions): void {
    for (const flow of [this.up, this.down]) {
      const s = flow.src;
      s[FLOW] = flow;
      s.on("data", onData);
      s.on("drain", onDrain);
      s.on("end", onEnd);
      s.on("finish", onFinish);
      s.on("error", onError);
      s.on("close", onClose);
    }
    if (this.idleMs > 0) {
      this.lastActivity = Date.now();
      this.idleTimer = setTimeout(checkIdle, this.idleMs, this);
    }
    const { leftover } = options;
    if (leftover && leftover.length > 0) {
      this.up.bytes += leftover.length;
      this.up.tally.bytesUp += leftover.length;
      for (const b of this.up.buckets ?? []) b.take(leftover.length);
      this.target.write(leftover);
      const over = this.up.meter?.count(leftover.length);
      if (over) this.fail(over);
    }
    if (options.clientEnded) {
      if (resetBehindEnd(this.client)) this.fail("client reset the connection");
      else this.target.end();
    }
    // A side that closed before we started (the client left while a slow dialer was still
    // working) will never emit 'close' again: count it now, or the relay would never end.
    for (const flow of [this.up, this.down]) {
      if (flow.src.closed) {
        this.fail(`${flow.name} closed before the relay started`);
        this.onClosed();
      }
    }
    this.client.resume();
    this.target.resume();
  }

  /**
   * An error or reset on one side is passed on as a reset, not a FIN: a FIN would tell the other
   * peer the stream ended cleanly (an aborted upload would look complete).
   */
  fail(reason: string, reset = true): void {
    if (this.failed) return;
    this.failed = true;
    this.reason = reason;
    for (const s of [this.client, this.target]) {
      const sock = s as Duplex & { resetAndDestroy?: () => void };
      // Not once our FIN is on its way: a reset after shutdown fails (EINVAL) and Node then never
      // emits 'close', so the relay, and the session, would never end.
      if (reset && !s.destroyed && !s.writableEnded && typeof sock.resetAndDestroy === "function")
        sock.resetAndDestroy();
      else s.destroy();
    }
  }

  onClosed(): void {
    // A side that closed has nothing left to read or be written, so no flow waits on a bucket
    // any more. The idle timer stays until both have closed: the other side may still be
    // flushing our FIN to a peer that stopped reading, and only the timer would end that.
    clearTimeout(this.up.restTimer);
    clearTimeout(this.down.restTimer);
    this.up.restTimer = this.down.restTimer = undefined;
    if (++this.closed === 2) {
      clearTimeout(this.idleTimer);
      // Both sockets are closed: nothing reads into these buffers or writes from them any more.
      for (const flow of [this.up, this.down]) for (const b of flow.buffers ?? []) giveReadBuffer(b);
      this.resolve({ bytesUp: this.up.bytes, bytesDown: this.down.bytes, reason: this.reason });
    }
  }
}

/**
 * Ends the relay that `stream` (a relay's client or target) takes part in, resetting both sides:
 * for a shutdown that cannot wait, including for a side already closed whose peer still holds
 * the relay open. Returns false if `stream` is in no relay (or its relay already failed).
 */
export function cutRelay(stream: Duplex, reason: string): boolean {
  const relay = (stream as RelayedStream)[FLOW]?.relay;
  if (!relay || relay.failed) return false;
  relay.fail(reason);
  return true;
}

function onData(this: RelayedStream, chunk: Buffer): void {
  const flow = this[FLOW]!;
  pass(flow, chunk);
  if (!flow.buffers && chunk.length >= BULK_READ && flow.bytes >= BULK_AFTER && !flow.relay.failed)
    enterBulkMode(flow);
}

/** A read into one of the flow's own buffers (bulk mode): `n` bytes at its start. */
function onOwnRead(this: net.Socket, n: number, buffer: Buffer): void {
  pass((this as RelayedStream)[FLOW]!, buffer.subarray(0, n));
}

function pass(flow: Flow, chunk: Buffer): void {
  flow.bytes += chunk.length;
  flow.tally[flow.tallyKey] += chunk.length;
  const { relay, src, dst } = flow;
  if (relay.idleMs > 0) relay.lastActivity = Date.now();
  if (flow.buffers) {
    dst.write(chunk, flow.afterWrite);
    // Bytes still unwritten are the tail of what was written so far (a socket writes in order):
    // if no more than this chunk's, only this read's buffer is held, and the next read goes into
    // the other; if more, both are, and nothing is read until the writer has taken every byte.
    const held = dst.writableLength;
    if (held > chunk.length) {
      flow.flushing = true;
      src.pause();
    } else if (held > 0) {
      flow.reading ^= 1;
      flow.buffers[flow.reading] ??= takeReadBuffer();
    }
  } else if (!dst.write(chunk)) {
    flow.draining = true;
    src.pause();
  }
  if (!flow.buckets) return;
  if (flow.meter) {
    const over = flow.meter.count(chunk.length);
    // The chunk that went over is delivered: the overshoot is at most one chunk a session.
    if (over) return relay.fail(over);
  }
  // Reasons to pause: the writer is full (until drain or flush) or the bucket is in debt (until
  // the timer); reading resumes only when none holds.
  let wait = 0;
  for (const b of flow.buckets) wait = Math.max(wait, b.take(chunk.length));
  if (wait > 0 && !flow.resting) {
    flow.resting = true;
    src.pause();
    flow.restTimer = setTimeout(endRest, Math.ceil(wait), flow);
  }
}

/**
 * A flow moving bulk data (a large read, after a few hundred KiB) stops taking a fresh buffer
 * from Node per read and reads into two of ours in turn (see src/io/read-into.ts). Small and
 * idle flows never do, so an idle connection holds no read buffer of ours. Only between plain TCP sockets:
 * the flushing rule relies on a socket's writableLength counting every byte not yet written.
 */
const BULK_READ = 16 * 1024;
const BULK_AFTER = 256 * 1024;

function enterBulkMode(flow: Flow): void {
  const { src, dst } = flow;
  if (flow.draining || flow.resting || !(dst instanceof net.Socket) || !(src instanceof net.Socket)) return;
  const buffers = [takeReadBuffer()];
  const afterWrite = (): void => {
    if (!flow.flushing || dst.writableLength > 0) return;
    flow.flushing = false;
    if (!flow.resting) src.resume();
  };
  if (!readIntoOwnBuffers(src, buffers[0]!, onOwnRead, () => buffers[flow.reading]!))
    return giveReadBuffer(buffers[0]!);
  flow.buffers = buffers;
  flow.afterWrite = afterWrite;
}

function endRest(flow: Flow): void {
  flow.resting = false;
  flow.restTimer = undefined;
  if (!flow.draining && !flow.flushing) flow.src.resume();
}

/** `this` drained: the flow writing to it may read again. */
function onDrain(this: RelayedStream): void {
  const flow = this[FLOW]!.reverse;
  flow.draining = false;
  // A slow reader catching up is activity too, though no new byte was read.
  if (flow.relay.idleMs > 0) flow.relay.lastActivity = Date.now();
  if (!flow.resting && !flow.flushing) flow.src.resume();
}

function onEnd(this: RelayedStream): void {
  const flow = this[FLOW]!;
  // A reset that Node reported as an end: passed on as a FIN, a cut-off transfer would look whole.
  if (resetBehindEnd(this)) return flow.relay.fail(`${flow.name} reset the connection`);
  flow.dst.end();
}

/** `this` has delivered our FIN; once both have, nothing more can flow. */
function onFinish(this: RelayedStream): void {
  const relay = this[FLOW]!.relay;
  if (++relay.finished === 2) {
    relay.client.destroy();
    relay.target.destroy();
  }
}

function onError(this: RelayedStream, err: Error): void {
  const flow = this[FLOW]!;
  flow.relay.fail(`${flow.name} error: ${err.message}`);
}

function onClose(this: RelayedStream): void {
  const flow = this[FLOW]!;
  const { relay } = flow;
  if (!relay.failed) {
    if (!this.readableEnded) relay.fail(`${flow.name} closed abruptly`);
    // It had sent its FIN, but the other side was still sending to it: those bytes can no longer
    // be delivered, and the other side (perhaps paused on a bucket or a full buffer, so it would
    // never notice) must be told rather than left open for ever.
    else if (!this.writableFinished)
      relay.fail(`${flow.name} closed before the ${flow.reverse.name} finished sending to it`);
  }
  relay.onClosed();
}

/**
 * One timer per relay, not one per socket: it fires after the idle period and either closes the
 * relay or sleeps again for what is left since the last activity.
 */
function checkIdle(relay: Relay): void {
  const quiet = Date.now() - relay.lastActivity;
  if (quiet >= relay.idleMs) relay.fail(`idle for ${relay.idleMs} ms`, false);
  else relay.idleTimer = setTimeout(checkIdle, relay.idleMs - quiet, relay);
}
