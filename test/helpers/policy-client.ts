import { once } from "node:events";
import net from "node:net";
import { addressOf, encodeAddress } from "../../src/protocol/address.js";

/** Reads exactly `n` bytes (or rejects on close/timeout), keeping any extra for the next read. */
export class ByteReader {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private ended = false;
  constructor(readonly socket: net.Socket) {
    socket.on("data", (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.wake?.();
    });
    const end = (): void => {
      this.ended = true;
      this.wake?.();
    };
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", () => {});
  }
  async read(n: number, timeoutMs = 15_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection closed after ${this.buf.length} of ${n} bytes`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} bytes`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 50);
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
}

export interface Socks5Result {
  /** REP of the request reply, or undefined when authentication failed first. */
  reply?: number;
  /** RFC 1929 status (0 = success) when credentials were sent. */
  authStatus?: number;
  /** Milliseconds from sending the credentials to the authentication reply. */
  authMs?: number;
  socket: net.Socket;
  reader: ByteReader;
}

/** A SOCKS5 CONNECT written byte by byte, so tests see the exact reply codes. */
export async function socks5Connect(
  proxyPort: number,
  target: string,
  options: { user?: string; password?: string; proxyHost?: string } = {},
): Promise<Socks5Result> {
  const socket = net.connect({ host: options.proxyHost ?? "127.0.0.1", port: proxyPort });
  const reader = new ByteReader(socket);
  await once(socket, "connect");
  const withAuth = options.user !== undefined;
  socket.write(Buffer.from([5, 1, withAuth ? 2 : 0]));
  const sel = await reader.read(2);
  const result: Socks5Result = { socket, reader };
  if (sel[1] === 0xff) throw new Error("no acceptable method");
  if (sel[1] === 2) {
    const u = Buffer.from(options.user ?? "");
    const p = Buffer.from(options.password ?? "");
    const started = Date.now();
    socket.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
    const status = await reader.read(2, 30_000);
    result.authMs = Date.now() - started;
    result.authStatus = status[1]!;
    if (status[1] !== 0) return result;
  }
  const colon = target.lastIndexOf(":");
  const addr = addressOf(target.slice(0, colon), Number(target.slice(colon + 1)));
  socket.write(Buffer.concat([Buffer.from([5, 1, 0]), encodeAddress(addr)]));
  const head = await reader.read(4);
  result.reply = head[1]!;
  const rest = head[3] === 1 ? 6 : head[3] === 4 ? 18 : 1 + (await reader.read(1))[0]! + 2;
  await reader.read(head[3] === 3 ? rest - 1 : rest);
  return result;
}

/** A SOCKS4a CONNECT by name; returns the CD byte of the reply (90 granted, 91 rejected). */
export async function socks4aConnect(proxyPort: number, host: string, port: number): Promise<number> {
  const socket = net.connect({ host: "127.0.0.1", port: proxyPort });
  const reader = new ByteReader(socket);
  await once(socket, "connect");
  const req = Buffer.concat([
    Buffer.from([4, 1, port >> 8, port & 0xff, 0, 0, 0, 1]),
    Buffer.from("me\0"),
    Buffer.from(`${host}\0`),
  ]);
  socket.write(req);
  const reply = await reader.read(8);
  socket.destroy();
  return reply[1]!;
}

/** Sends `text` through an established relay to an echo server and returns what comes back. */
export async function echoThrough(r: Socks5Result, text: string): Promise<string> {
  r.socket.write(text);
  return (await r.reader.read(Buffer.byteLength(text))).toString();
}
