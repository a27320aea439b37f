import { once } from "node:events";
import net from "node:net";
import type { Duplex } from "node:stream";
import { type GssapiClientOptions, gssapiClientNegotiate } from "../../src/client/gssapi.js";
import { StreamReader } from "../../src/io/reader.js";
import { addressOf, type SocksAddress } from "../../src/protocol/address.js";
import type { ProtectionName } from "../../src/protocol/gssapi.js";
import {
  encodeGreeting,
  encodeRequest,
  Method,
  parseMethodSelection,
  parseReply,
} from "../../src/protocol/socks5.js";

/**
 * A minimal SOCKS5 CONNECT over GSSAPI for tests (until the client library takes a gssapi
 * method): greeting offering only 0x01, RFC 1961, request, reply. Returns the stream to talk to
 * the target through, with any early bytes pushed back.
 */
export async function gssapiConnect(
  proxyPort: number,
  target: { host: string; port: number },
  options: GssapiClientOptions,
  command: "connect" | "udp" = "connect",
): Promise<{
  stream: Duplex;
  protection: ProtectionName;
  reply: number;
  socket: net.Socket;
  bound: SocksAddress;
}> {
  const socket = net.connect({ host: "127.0.0.1", port: proxyPort, allowHalfOpen: true });
  socket.on("error", () => {});
  await once(socket, "connect");
  const reader = new StreamReader(socket);
  socket.write(encodeGreeting({ methods: [Method.GSSAPI] }));
  const method = await reader.read(parseMethodSelection);
  if (method !== Method.GSSAPI) {
    socket.destroy();
    throw new Error(`the proxy did not select GSSAPI (0x${method.toString(16)})`);
  }
  let io: Awaited<ReturnType<typeof gssapiClientNegotiate>>;
  try {
    io = await gssapiClientNegotiate(socket, reader, options);
  } catch (err) {
    socket.destroy();
    throw err;
  }
  io.stream.write(encodeRequest({ command, address: addressOf(target.host, target.port) }));
  const { reply, address: bound } = await io.reader.read(parseReply);
  const rest = io.reader.release();
  if (rest.length > 0) io.stream.unshift(rest);
  return { stream: io.stream, protection: io.protection, reply, socket, bound };
}
