import { createHash } from "node:crypto";
import { once } from "node:events";
import net from "node:net";

/** A TCP server that echoes every byte and honours half-close (FIN in, FIN out after the echo). */
export async function startEchoServer(
  host = "127.0.0.1",
): Promise<{ port: number; peers: { address: string; port: number }[]; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  // Who connected, so tests can check the BND.ADDR/PORT a proxy reports against the real thing.
  const peers: { address: string; port: number }[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    peers.push({ address: s.remoteAddress ?? "", port: s.remotePort ?? 0 });
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    s.pipe(s);
  });
  server.listen(0, host);
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    peers,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * Listens on `host` (an ephemeral port) and gives the port and a close() that also ends the
 * connections still open, so a test's HTTP server never waits on a kept-alive client to close.
 */
export async function listenClosable(
  server: net.Server,
  host = "127.0.0.1",
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.listen(0, host);
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A server that sends `chunk` over and over, as fast as each reader takes it, until the connection goes. */
export async function startEndlessSource(chunk: Buffer): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((s) => {
    s.on("error", () => {});
    const pump = (): void => {
      while (!s.destroyed && s.write(chunk)) {}
    };
    s.on("drain", pump);
    pump();
  });
  return listenClosable(server);
}

/** Connects, sends `bytes`, and collects whatever arrives until the peer closes or `timeoutMs`. */
export async function rawExchange(
  port: number,
  bytes: Buffer,
  { host = "127.0.0.1", timeoutMs = 10_000, end = false } = {},
): Promise<{ data: Buffer; closed: boolean }> {
  const socket = net.connect({ host, port, allowHalfOpen: true });
  await once(socket, "connect");
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.on("error", () => {});
  socket.write(bytes);
  if (end) socket.end();
  const closed = await Promise.race([
    once(socket, "end").then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs)),
  ]);
  socket.destroy();
  return { data: Buffer.concat(chunks), closed };
}

export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Resolves when `predicate` holds, polling; rejects after `timeoutMs`. Bounded, like every loop in tests. */
export async function waitFor(predicate: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `promise`, or a failure after `ms`; the timer never outlives the test. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `attempt` (e.g. sends a datagram, which loopback may drop) every `everyMs` until `done()`
 * holds or `timeoutMs` has passed; the caller's assertions then say what was missing. Bounded by
 * time rather than by count, so a slow machine gets the same window as a fast one.
 */
export async function retryUntil(
  attempt: () => unknown,
  done: () => boolean,
  { timeoutMs = 10_000, everyMs = 100 } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) {
    await attempt();
    if (done()) return;
    await sleep(everyMs);
  }
}
