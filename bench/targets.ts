/**
 * The target servers (echo, sink, source) in their own process, so neither the load generator
 * nor the proxy shares an event loop with them. Reports its ports over IPC, exits when the
 * orchestrator disconnects.
 */
import { once } from "node:events";
import net from "node:net";
import type { TargetPorts } from "./protocol.js";

const CHUNK = Buffer.alloc(64 * 1024, "ferry-bench-source;");

async function listen(server: net.Server): Promise<number> {
  server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 });
  await once(server, "listening");
  return (server.address() as net.AddressInfo).port;
}

const echo = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  s.on("error", () => {});
  // pipe ends our side once the client's FIN arrives and every byte is echoed.
  s.pipe(s);
});

/**
 * The upload arrives as 64 KiB records; the load generator marks its last one by an "E" as first
 * byte (others start with "f"). Once the last record is in, the sink answers the byte count. A
 * marker rather than a FIN, because microsocks closes both ways on the client's FIN.
 */
const RECORD = 64 * 1024;
const END = 0x45; // "E"

const sink = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  let bytes = 0;
  let endAt = -1;
  let answered = false;
  const answer = (): void => {
    if (answered) return;
    answered = true;
    const count = Buffer.alloc(8);
    count.writeBigUInt64BE(BigInt(bytes));
    s.end(count);
  };
  s.on("error", () => {});
  s.on("data", (chunk: Buffer) => {
    const start = bytes;
    bytes += chunk.length;
    // Only the first byte of each record is looked at: one read per 64 KiB.
    for (let at = Math.ceil(start / RECORD) * RECORD; endAt < 0 && at < bytes; at += RECORD) {
      if (chunk[at - start] === END) endAt = at + RECORD;
    }
    if (endAt >= 0 && bytes >= endAt) answer();
  });
  // A client that ends with a FIN instead gets the same answer.
  s.on("end", answer);
});

const source = net.createServer({ noDelay: true }, (s) => {
  let open = true;
  const stop = (): void => {
    open = false;
    s.destroy();
  };
  s.on("error", stop);
  s.on("close", stop);
  s.on("end", stop);
  const pump = (): void => {
    while (open && s.write(CHUNK)) {}
  };
  s.on("drain", pump);
  pump();
});

const ports: TargetPorts = {
  echo: await listen(echo),
  sink: await listen(sink),
  source: await listen(source),
};
process.send?.({ ready: ports });
process.on("disconnect", () => process.exit(0));
