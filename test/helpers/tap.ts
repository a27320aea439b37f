import { once } from "node:events";
import net from "node:net";

export interface Tap {
  port: number;
  /** Every byte client → server, in order, across all connections. */
  up(): Buffer;
  /** Every byte server → client. */
  down(): Buffer;
  close(): Promise<void>;
}

/**
 * A TCP relay between a client and a server that records the bytes on the wire, and can flip
 * one byte of the client's stream (at `corruptAt`) to simulate a damaged token.
 */
export async function startTap(targetPort: number, { corruptAt }: { corruptAt?: number } = {}): Promise<Tap> {
  const upChunks: Buffer[] = [];
  const downChunks: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect({ host: "127.0.0.1", port: targetPort, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let upOffset = 0;
    client.on("data", (chunk: Buffer) => {
      if (corruptAt !== undefined && corruptAt >= upOffset && corruptAt < upOffset + chunk.length) {
        chunk = Buffer.from(chunk);
        chunk[corruptAt - upOffset] = (chunk[corruptAt - upOffset] ?? 0) ^ 0x5a;
      }
      upOffset += chunk.length;
      upChunks.push(chunk);
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      downChunks.push(chunk);
      client.write(chunk);
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    up: () => Buffer.concat(upChunks),
    down: () => Buffer.concat(downChunks),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
