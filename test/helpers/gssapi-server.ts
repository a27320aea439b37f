import { once } from "node:events";
import net from "node:net";
import { type GssContext, loadGssapi } from "../../src/auth/gssapi-native.js";
import { StreamReader } from "../../src/io/reader.js";
import {
  decodeProtectionLevel,
  encodeGssMessage,
  encodeProtectionLevel,
  expectGssMessage,
  type ProtectionName,
} from "../../src/protocol/gssapi.js";
import { encodeMethodSelection, Method, parseGreeting } from "../../src/protocol/socks5.js";

/** Where a scripted session stands once the client has asked for its protection level. */
export interface ScriptedGssSession {
  socket: net.Socket;
  reader: StreamReader;
  ctx: GssContext;
  requested: ProtectionName;
  /** Answers the protection sub-negotiation with `level` (wrapped without confidentiality, RFC 1961 §4.4). */
  answer(level: ProtectionName): void;
  /** Sends one RFC 1961 data message, wrapped with gss_wrap and the given conf_req_flag. */
  sendData(data: Buffer, confidential: boolean): void;
  /** Reads one data message and unwraps it with gss_unwrap, saying whether it was encrypted. */
  readData(): Promise<{ data: Buffer; confidential: boolean }>;
}

/**
 * A SOCKS5 server that selects GSSAPI, establishes the context with the add-on (plain gss_wrap /
 * gss_unwrap afterwards, like Dante or any C peer) and reads the client's protection request, then
 * hands the session to `script`: for behaviours Ferry's own server never shows (hanging up on a
 * level, wrapping at the wrong level). Errors of the script are collected, not thrown.
 */
export async function startScriptedGssProxy(
  keytab: string,
  script: (session: ScriptedGssSession) => Promise<void>,
): Promise<{ port: number; errors: Error[]; close(): Promise<void> }> {
  const api = loadGssapi();
  const credential = new api.Credential(keytab);
  const sockets = new Set<net.Socket>();
  const errors: Error[] = [];
  const server = net.createServer(async (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    const ctx = new api.Context(credential);
    // Room for a whole data message (65,535 + 4 bytes), past the reader's 64 KiB default.
    const reader = new StreamReader(socket, 2 * 65_540);
    try {
      await reader.read(parseGreeting);
      socket.write(encodeMethodSelection(Method.GSSAPI));
      for (let round = 0; !ctx.complete && round < 8; round++) {
        const reply = await ctx.step(await reader.read(expectGssMessage("auth")));
        if (reply.length > 0) socket.write(encodeGssMessage({ type: "auth", token: reply }));
      }
      const requested = decodeProtectionLevel(
        ctx.unwrap(await reader.read(expectGssMessage("protection"))).data,
      );
      await script({
        socket,
        reader,
        ctx,
        requested,
        answer: (level) =>
          socket.write(
            encodeGssMessage({ type: "protection", token: ctx.wrap(encodeProtectionLevel(level), false) }),
          ),
        sendData: (data, confidential) =>
          socket.write(encodeGssMessage({ type: "data", token: ctx.wrap(data, confidential) })),
        readData: async () => ctx.unwrap(await reader.read(expectGssMessage("data"))),
      });
    } catch (err) {
      errors.push(err as Error);
      socket.destroy();
    } finally {
      ctx.dispose();
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    errors,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
