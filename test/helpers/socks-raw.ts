import { once } from "node:events";
import net from "node:net";
import { StreamReader } from "../../src/io/reader.js";
import { addressOf, type SocksAddress } from "../../src/protocol/address.js";
import type { Parser } from "../../src/protocol/parse.js";
import { encodeSocks4Request, parseSocks4Reply, type Socks4ReplyMessage } from "../../src/protocol/socks4.js";
import {
  type CommandName,
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
  type Socks5Reply,
} from "../../src/protocol/socks5.js";

/** A hand-driven SOCKS control connection, for tests that check replies byte by byte. */
export interface RawSocks {
  socket: net.Socket;
  reader: StreamReader;
  /** Resolves when the server closes the connection (end or close), with whether it did so in time. */
  closed(timeoutMs?: number): Promise<boolean>;
}

async function open(host: string, port: number, localAddress?: string): Promise<RawSocks> {
  const socket = net.connect({ host, port, allowHalfOpen: true, ...(localAddress && { localAddress }) });
  socket.on("error", () => {});
  await once(socket, "connect");
  // A failed test must not leave the process waiting on this connection.
  socket.unref();
  const reader = new StreamReader(socket, 1 << 20);
  const ended = new Promise<void>((resolve) => {
    socket.once("end", resolve);
    socket.once("close", resolve);
  });
  return {
    socket,
    reader,
    closed: (timeoutMs = 5000) =>
      Promise.race([
        ended.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs)),
      ]),
  };
}

/** SOCKS5 with no authentication: greeting, request; returns the first reply. */
export async function socks5Request(
  proxy: { host: string; port: number },
  command: CommandName,
  target: SocksAddress,
  /** The client's own address (another 127.0.0.x is another client). */
  from?: string,
): Promise<RawSocks & { reply: Socks5Reply; next: () => Promise<Socks5Reply> }> {
  const raw = await open(proxy.host, proxy.port, from);
  raw.socket.write(encodeGreeting({ methods: [0] }));
  const method = await raw.reader.read(parseMethodSelection);
  if (method !== 0) throw new Error(`server chose method ${method}`);
  raw.socket.write(encodeRequest({ command, address: target }));
  const reply = await raw.reader.read(parseReply);
  return { ...raw, reply, next: () => raw.reader.read(parseReply) };
}

export async function socks4Request(
  proxy: { host: string; port: number },
  command: "connect" | "bind",
  target: SocksAddress,
): Promise<RawSocks & { reply: Socks4ReplyMessage; next: () => Promise<Socks4ReplyMessage> }> {
  const raw = await open(proxy.host, proxy.port);
  raw.socket.write(encodeSocks4Request({ command, address: target, userId: "test" }));
  const reply = await raw.reader.read(parseSocks4Reply);
  return { ...raw, reply, next: () => raw.reader.read(parseSocks4Reply) };
}

/** Reads exactly `n` bytes from a reader. */
export function bytes(n: number): Parser<Buffer> {
  return (buf) => (buf.length >= n ? { value: Buffer.from(buf.subarray(0, n)), consumed: n } : undefined);
}

export const ANY_V4 = addressOf("0.0.0.0", 0);
