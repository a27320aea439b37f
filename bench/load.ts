/**
 * The load generator, in its own process: the orchestrator sends one LoadRequest at a time over
 * IPC and gets one LoadReply back. Written as plain callbacks, not promises per byte, so that it
 * costs less CPU than whatever it measures.
 */
import net from "node:net";
import { performance } from "node:perf_hooks";
import type {
  HoldResult,
  LoadReply,
  LoadRequest,
  SessionsResult,
  ThroughputResult,
  Via,
} from "./protocol.js";

const HOST = "127.0.0.1";
const GREETING = Buffer.from([5, 1, 0]);
const CHUNK = Buffer.alloc(64 * 1024, "ferry-bench-upload;");
/** The last record of an upload: its "E" tells the sink to answer (see targets.ts). */
const LAST = Buffer.alloc(64 * 1024, "End-of-upload;");
const PAYLOAD = Buffer.alloc(64, "0123456789abcdef");

function connectRequest(port: number): Buffer {
  const b = Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, 0, 0]);
  b.writeUInt16BE(port, 8);
  return b;
}

/** Length of a SOCKS5 reply in `buf`, or 0 while incomplete. */
function replyLength(buf: Buffer): number {
  if (buf.length < 5) return 0;
  const len = buf[3] === 1 ? 10 : buf[3] === 4 ? 22 : 7 + buf[4]!;
  return buf.length >= len ? len : 0;
}

/**
 * Opens a connection to 127.0.0.1:port, through the SOCKS5 proxy when `via` says so, and calls
 * `ready` once bytes can flow to the target (greeting and CONNECT done, not pipelined: each step
 * waits for the server's answer, as ordinary clients do).
 */
function open(via: Via, port: number, ready: (s: net.Socket) => void, fail: (e: Error) => void): net.Socket {
  const s = net.connect({ host: HOST, port: via.kind === "direct" ? port : via.port, noDelay: true });
  let done = false;
  const onError = (e: Error): void => {
    if (done) return;
    done = true;
    s.destroy();
    fail(e);
  };
  s.on("error", onError);
  if (via.kind === "direct") {
    s.once("connect", () => {
      done = true;
      ready(s);
    });
    return s;
  }
  let stage = 0;
  let buf: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    if (stage === 0) {
      if (buf.length < 2) return;
      if (buf[0] !== 5 || buf[1] !== 0) return onError(new Error(`method selection ${buf[1]}`));
      buf = buf.subarray(2);
      stage = 1;
      s.write(connectRequest(port));
    }
    const len = replyLength(buf);
    if (len === 0) return;
    if (buf[1] !== 0) return onError(new Error(`CONNECT reply ${buf[1]}`));
    s.off("data", onData);
    done = true;
    // `ready` attaches its own data listener in this same tick, so nothing is lost.
    ready(s);
  };
  s.once("connect", () => s.write(GREETING));
  s.on("data", onData);
  return s;
}

function cpuMark(): { cpu: NodeJS.CpuUsage; t: number } {
  return { cpu: process.cpuUsage(), t: performance.now() };
}
function cpuSince(m: { cpu: NodeJS.CpuUsage; t: number }): { cpuMs: number; wallMs: number } {
  const d = process.cpuUsage(m.cpu);
  return { cpuMs: (d.user + d.system) / 1000, wallMs: performance.now() - m.t };
}

/**
 * Writes 64 KiB records as fast as the path takes for `seconds`, then the last record; the sink
 * answers how much arrived. Each write is one whole record, so records stay 64 KiB-aligned.
 */
function upload(via: Via, port: number, seconds: number): Promise<ThroughputResult> {
  return new Promise((resolve, reject) => {
    open(
      via,
      port,
      (s) => {
        const mark = cpuMark();
        const start = performance.now();
        const stopAt = start + seconds * 1000;
        let answer = Buffer.alloc(0);
        const pump = (): void => {
          while (performance.now() < stopAt) {
            if (!s.write(CHUNK)) return;
          }
          s.off("drain", pump);
          s.write(LAST);
        };
        s.on("drain", pump);
        s.on("data", (c: Buffer) => {
          answer = Buffer.concat([answer, c]);
        });
        s.on("end", () => {
          const elapsed = (performance.now() - start) / 1000;
          s.destroy();
          if (answer.length !== 8) return reject(new Error(`sink answered ${answer.length} bytes`));
          resolve({ bytes: Number(answer.readBigUInt64BE()), seconds: elapsed, ...cpuSince(mark) });
        });
        s.on("error", reject);
        pump();
      },
      reject,
    );
  });
}

/** Reads from the source for `seconds`, then drops the connection. */
function download(via: Via, port: number, seconds: number): Promise<ThroughputResult> {
  return new Promise((resolve, reject) => {
    open(
      via,
      port,
      (s) => {
        const mark = cpuMark();
        const start = performance.now();
        let bytes = 0;
        const timer = setTimeout(() => {
          const elapsed = (performance.now() - start) / 1000;
          s.destroy();
          resolve({ bytes, seconds: elapsed, ...cpuSince(mark) });
        }, seconds * 1000);
        s.on("data", (c: Buffer) => {
          bytes += c.length;
        });
        s.on("error", (e) => {
          clearTimeout(timer);
          reject(e);
        });
      },
      reject,
    );
  });
}

/**
 * `count` whole sessions, `concurrency` in flight: connect, greeting, CONNECT, 64 bytes echoed
 * and checked, FIN, wait for the close. Latency runs from connect() to the close.
 */
function sessions(
  via: Via,
  port: number,
  count: number,
  concurrency: number,
  timeoutMs: number,
): Promise<SessionsResult> {
  return new Promise((resolve) => {
    const mark = cpuMark();
    const latencies: number[] = [];
    let started = 0;
    let finished = 0;
    let errors = 0;
    let firstError: string | undefined;
    let over = false;
    const sockets = new Set<net.Socket>();
    const finish = (): void => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      for (const s of sockets) s.destroy();
      resolve({ ok: latencies.length, errors, firstError, latencies, ...cpuSince(mark) });
    };
    const timer = setTimeout(() => {
      errors += count - finished;
      firstError ??= `timed out after ${timeoutMs} ms with ${count - finished} sessions unfinished`;
      finish();
    }, timeoutMs);
    const failed = (e: Error): void => {
      errors++;
      firstError ??= e.message;
      next();
    };
    const next = (): void => {
      if (over) return;
      if (started >= count) {
        if (finished >= count) finish();
        return;
      }
      started++;
      const t0 = performance.now();
      let echoed = 0;
      let ended = false;
      let good = true;
      const s = open(
        via,
        port,
        (sock) => {
          sock.on("data", (c: Buffer) => {
            if (!c.equals(PAYLOAD.subarray(echoed, echoed + c.length))) good = false;
            echoed += c.length;
            if (echoed >= PAYLOAD.length && !ended) {
              ended = true;
              sock.end();
            }
          });
          sock.write(PAYLOAD);
        },
        () => {},
      );
      sockets.add(s);
      s.on("close", () => {
        sockets.delete(s);
        finished++;
        if (ended && good && echoed === PAYLOAD.length) {
          latencies.push(performance.now() - t0);
          next();
        } else {
          failed(new Error(good ? `session closed after ${echoed} of 64 echoed bytes` : "echo mismatch"));
        }
      });
    };
    for (let i = 0; i < Math.min(concurrency, count); i++) next();
    if (count === 0) finish();
  });
}

/** Idle connections held open for a memory reading; `release` closes them. */
const held = new Set<net.Socket>();

function hold(
  via: Via,
  port: number,
  count: number,
  concurrency: number,
  timeoutMs: number,
): Promise<HoldResult> {
  return new Promise((resolve) => {
    const mark = cpuMark();
    let started = 0;
    let settled = 0;
    let errors = 0;
    let firstError: string | undefined;
    let over = false;
    const finish = (): void => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      resolve({ open: held.size, errors, firstError, ...cpuSince(mark) });
    };
    const timer = setTimeout(() => {
      firstError ??= `timed out after ${timeoutMs} ms with ${held.size} of ${count} open`;
      finish();
    }, timeoutMs);
    const next = (): void => {
      if (over) return;
      if (started >= count) {
        if (settled >= count) finish();
        return;
      }
      started++;
      const s = open(
        via,
        port,
        (sock) => {
          // One byte through and back proves the relay is up; after that the connection idles.
          sock.once("data", () => {
            held.add(sock);
            settled++;
            next();
          });
          sock.write("x");
        },
        (e) => {
          errors++;
          firstError ??= e.message;
          settled++;
          next();
        },
      );
      s.on("close", () => held.delete(s));
    };
    for (let i = 0; i < Math.min(concurrency, count); i++) next();
  });
}

async function handle(req: LoadRequest): Promise<ThroughputResult | SessionsResult | HoldResult | null> {
  switch (req.op) {
    case "upload":
      return upload(req.via, req.port, req.seconds);
    case "download":
      return download(req.via, req.port, req.seconds);
    case "sessions":
      return sessions(req.via, req.port, req.count, req.concurrency, req.timeoutMs);
    case "hold":
      return hold(req.via, req.port, req.count, req.concurrency, req.timeoutMs);
    case "release": {
      const closing = [...held].map((s) => new Promise((r) => s.once("close", r)));
      for (const s of held) s.destroy();
      await Promise.all(closing);
      return null;
    }
    case "exit":
      process.exit(0);
  }
}

process.on("message", (msg: { id: number; req: LoadRequest }) => {
  handle(msg.req).then(
    (result) => process.send?.({ id: msg.id, ok: true, result } satisfies LoadReply),
    (err: Error) => process.send?.({ id: msg.id, ok: false, error: err.message } satisfies LoadReply),
  );
});
process.on("disconnect", () => process.exit(0));
process.send?.({ ready: true });
