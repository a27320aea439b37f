import type { Duplex } from "node:stream";
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
  return new Promise((resolve) => {
    const result: RelayResult = { bytesUp: 0, bytesDown: 0, reason: "completed" };
    let finished = 0;
    let closed = 0;
    let failed = false;

    // An error or reset on one side is passed on as a reset, not a FIN: a FIN would tell the
    // other peer the stream ended cleanly (an aborted upload would look complete).
    const fail = (reason: string, reset = true): void => {
      if (failed) return;
      failed = true;
      result.reason = reason;
      for (const s of [client, target]) {
        const sock = s as Duplex & { resetAndDestroy?: () => void };
        if (reset && !s.destroyed && typeof sock.resetAndDestroy === "function") sock.resetAndDestroy();
        else s.destroy();
      }
    };

    const onClose = (): void => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      if (++closed === 2) resolve(result);
    };
    const timers = new Set<NodeJS.Timeout>();
    const direction = (
      src: Duplex,
      dst: Duplex,
      count: (n: number) => void,
      buckets: TokenBucket[] | undefined,
    ): void => {
      if (!buckets) {
        src.on("data", (chunk: Buffer) => {
          count(chunk.length);
          if (!dst.write(chunk)) src.pause();
        });
        dst.on("drain", () => src.resume());
      } else {
        // Two reasons to pause: the writer is full (until drain) or the bucket is in debt (until
        // the timer); reading resumes only when neither holds.
        let draining = false;
        let resting = false;
        src.on("data", (chunk: Buffer) => {
          count(chunk.length);
          if (!dst.write(chunk)) {
            draining = true;
            src.pause();
          }
          let wait = 0;
          for (const b of buckets) wait = Math.max(wait, b.take(chunk.length));
          if (wait > 0 && !resting) {
            resting = true;
            src.pause();
            const timer = setTimeout(() => {
              timers.delete(timer);
              resting = false;
              if (!draining) src.resume();
            }, Math.ceil(wait));
            timers.add(timer);
          }
        });
        dst.on("drain", () => {
          draining = false;
          if (!resting) src.resume();
        });
      }
      src.on("end", () => dst.end());
      dst.on("finish", () => {
        // Both directions delivered their FIN: nothing more can flow.
        if (++finished === 2) {
          client.destroy();
          target.destroy();
        }
      });
    };

    direction(
      client,
      target,
      (n) => {
        result.bytesUp += n;
      },
      options.throttle?.up,
    );
    direction(
      target,
      client,
      (n) => {
        result.bytesDown += n;
      },
      options.throttle?.down,
    );

    client.on("error", (err) => fail(`client error: ${err.message}`));
    target.on("error", (err) => fail(`target error: ${err.message}`));
    client.on("close", () => {
      if (!client.readableEnded && !failed) fail("client closed abruptly");
      onClose();
    });
    target.on("close", () => {
      if (!target.readableEnded && !failed) fail("target closed abruptly");
      onClose();
    });

    const idle = options.idleTimeoutMs ?? 0;
    if (idle > 0) {
      // Every relayed byte is read from one socket and written to the other, so either socket
      // staying silent for the whole period means the relay is idle.
      for (const s of [client, target]) {
        const sock = s as Duplex & { setTimeout?: (ms: number, cb?: () => void) => void };
        sock.setTimeout?.(idle, () => fail(`idle for ${idle} ms`, false));
      }
    }

    if (options.leftover && options.leftover.length > 0) {
      result.bytesUp += options.leftover.length;
      for (const b of options.throttle?.up ?? []) b.take(options.leftover.length);
      target.write(options.leftover);
    }
    if (options.clientEnded) target.end();
    // A side that closed before we started (the client left while a slow dialer was still
    // working) will never emit 'close' again: count it now, or the relay would never end.
    for (const [s, name] of [
      [client, "client"],
      [target, "target"],
    ] as const) {
      if (s.closed) {
        fail(`${name} closed before the relay started`);
        onClose();
      }
    }
    client.resume();
    target.resume();
  });
}
