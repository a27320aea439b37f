import dgram from "node:dgram";
import { once } from "node:events";

export interface UdpEcho {
  port: number;
  /** Every datagram received, in order. */
  received: Buffer[];
  close(): Promise<void>;
}

/** A UDP server that sends every datagram back to its sender and remembers it. */
export async function startUdpEcho(host = "127.0.0.1", port = 0): Promise<UdpEcho> {
  const socket = dgram.createSocket({
    type: host.includes(":") ? "udp6" : "udp4",
    ipv6Only: host.includes(":"),
  });
  const received: Buffer[] = [];
  socket.on("message", (msg, rinfo) => {
    received.push(msg);
    socket.send(msg, rinfo.port, rinfo.address);
  });
  socket.on("error", () => {});
  socket.bind(port, host);
  await once(socket, "listening");
  socket.unref();
  return {
    port: socket.address().port,
    received,
    close: () => new Promise<void>((r) => socket.close(() => r())),
  };
}

/** A UDP socket that collects what it receives, with a bounded wait for the next datagram. */
export async function udpClient(host = "127.0.0.1"): Promise<{
  socket: dgram.Socket;
  port: number;
  received: Buffer[];
  next(timeoutMs?: number): Promise<Buffer | undefined>;
  close(): void;
}> {
  const socket = dgram.createSocket({
    type: host.includes(":") ? "udp6" : "udp4",
    ipv6Only: host.includes(":"),
  });
  const received: Buffer[] = [];
  let waiter: ((b: Buffer) => void) | undefined;
  socket.on("message", (msg) => {
    if (waiter) {
      const w = waiter;
      waiter = undefined;
      w(msg);
    } else received.push(msg);
  });
  socket.on("error", () => {});
  socket.bind(0, host);
  await once(socket, "listening");
  // A failed test must not leave the process waiting on this socket.
  socket.unref();
  return {
    socket,
    port: socket.address().port,
    received,
    next: (timeoutMs = 10_000) => {
      const queued = received.shift();
      if (queued) return Promise.resolve(queued);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          resolve(undefined);
        }, timeoutMs);
        waiter = (b) => {
          clearTimeout(timer);
          resolve(b);
        };
      });
    },
    close: () => {
      try {
        socket.close();
      } catch {
        // Already closed.
      }
    },
  };
}

export function sendTo(socket: dgram.Socket, data: Buffer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) =>
    socket.send(data, port, host, (err) => (err ? reject(err) : resolve())),
  );
}

export const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Echo servers on 127.0.0.1 and ::1 sharing one port, for named destinations ("localhost") that
 * may resolve to either family first. `received` merges both.
 */
export async function startDualUdpEcho(): Promise<{
  port: number;
  received: Buffer[];
  close(): Promise<void>;
}> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const v4 = await startUdpEcho("127.0.0.1");
    try {
      const v6 = await startUdpEcho("::1", v4.port);
      return {
        port: v4.port,
        get received() {
          return [...v4.received, ...v6.received];
        },
        close: async () => {
          await v4.close();
          await v6.close();
        },
      };
    } catch {
      await v4.close();
    }
  }
  throw new Error("no port free on both 127.0.0.1 and ::1 after 20 tries");
}
