/**
 * The smallest SOCKS5 CONNECT relay one can write in Node: greeting → no-auth → CONNECT →
 * net.connect → pipe both ways. No policy, limits, timeouts or logging: the ceiling any Node
 * design can reach, to compare Ferry against. Runs in its own process; reports its port over IPC.
 */
import { once } from "node:events";
import net from "node:net";

function replyFor(code: number, socket?: net.Socket): Buffer {
  const host = socket?.localAddress?.replace(/^::ffff:/, "") ?? "0.0.0.0";
  const port = socket?.localPort ?? 0;
  if (net.isIPv4(host)) {
    const b = Buffer.from([5, code, 0, 1, ...host.split(".").map(Number), 0, 0]);
    b.writeUInt16BE(port, 8);
    return b;
  }
  return Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
}

/** Parses the CONNECT request; undefined while incomplete. */
function parseRequest(buf: Buffer): { host: string; port: number; length: number } | undefined {
  if (buf.length < 5) return undefined;
  const atyp = buf[3];
  let host: string;
  let at: number;
  if (atyp === 1) {
    if (buf.length < 10) return undefined;
    host = `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`;
    at = 8;
  } else if (atyp === 3) {
    const len = buf[4]!;
    if (buf.length < 7 + len) return undefined;
    host = buf.toString("latin1", 5, 5 + len);
    at = 5 + len;
  } else if (atyp === 4) {
    if (buf.length < 22) return undefined;
    const parts: string[] = [];
    for (let i = 0; i < 8; i++) parts.push(buf.readUInt16BE(4 + 2 * i).toString(16));
    host = parts.join(":");
    at = 20;
  } else {
    throw new Error("bad address type");
  }
  return { host, port: buf.readUInt16BE(at), length: at + 2 };
}

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
  let buf: Buffer = Buffer.alloc(0);
  let stage: "greeting" | "request" | "connecting" = "greeting";
  client.on("error", () => client.destroy());
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    try {
      if (stage === "greeting") {
        if (buf.length < 2 || buf.length < 2 + buf[1]!) return;
        if (buf[0] !== 5 || !buf.subarray(2, 2 + buf[1]!).includes(0)) {
          client.end(Buffer.from([5, 0xff]));
          return;
        }
        buf = buf.subarray(2 + buf[1]!);
        stage = "request";
        client.write(Buffer.from([5, 0]));
      }
      if (stage === "request") {
        const req = parseRequest(buf);
        if (!req) return;
        if (buf[1] !== 1) {
          client.end(replyFor(7));
          return;
        }
        const early = buf.subarray(req.length);
        stage = "connecting";
        client.off("data", onData);
        client.pause();
        const target = net.connect({ host: req.host, port: req.port, allowHalfOpen: true, noDelay: true });
        let connected = false;
        target.on("error", () => {
          if (!connected) client.end(replyFor(5));
          client.destroy();
          target.destroy();
        });
        client.on("error", () => target.destroy());
        target.on("connect", () => {
          connected = true;
          client.write(replyFor(0, target));
          if (early.length > 0) target.write(early);
          client.pipe(target);
          target.pipe(client);
        });
      }
    } catch {
      client.destroy();
    }
  };
  client.on("data", onData);
});

server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 });
await once(server, "listening");
process.send?.({ ready: (server.address() as net.AddressInfo).port });
process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
