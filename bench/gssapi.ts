// Throughput of a GSSAPI-authenticated CONNECT at each protection level, one direction
// (client → target), through an in-process Ferry, against a throwaway local KDC.
//   npm run build && node dist/bench/gssapi.js [MiB per run, default 64] [runs, default 3]
import { once } from "node:events";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { loadGssapi } from "../src/auth/gssapi-native.js";
import type { ProtectionName } from "../src/protocol/gssapi.js";
import { startFerry } from "../test/helpers/ferry.js";
import { gssapiConnect } from "../test/helpers/gssapi-client.js";
import { startTestRealm } from "../test/helpers/kdc.js";

const mib = Number(process.argv[2] ?? 64);
const runs = Number(process.argv[3] ?? 3);
const total = mib * 1024 * 1024;

/** A target that counts bytes and reports when `total` have arrived. */
async function startSink(): Promise<{ port: number; received: () => Promise<void>; close: () => void }> {
  let waiter: (() => void) | undefined;
  const server = net.createServer((s) => {
    let n = 0;
    s.on("data", (c: Buffer) => {
      n += c.length;
      if (n >= total) waiter?.();
    });
    s.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    received: () =>
      new Promise<void>((r) => {
        waiter = r;
      }),
    close: () => server.close(),
  };
}

async function measure(port: number, sinkPort: number, level: ProtectionName, done: () => Promise<void>) {
  const conn = await gssapiConnect(
    port,
    { host: "127.0.0.1", port: sinkPort },
    { service: "rcmd@localhost", protection: [level] },
  );
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const arrived = done();
  const cpu = process.cpuUsage();
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    sent += chunk.length;
    if (!conn.stream.write(chunk)) await once(conn.stream, "drain");
  }
  await arrived;
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  conn.stream.destroy();
  // CPU time (client, Ferry and target share this process) says more than MB/s on a busy machine.
  return { mbps: total / seconds / 1e6, cpuMsPerMiB: (used.user + used.system) / 1000 / mib };
}

async function main(): Promise<void> {
  loadGssapi();
  const realm = await startTestRealm();
  const sink = await startSink();
  try {
    console.log(`GSSAPI CONNECT throughput, ${mib} MiB client → target, median of ${runs} runs`);
    for (const level of ["none", "integrity", "confidentiality"] as const) {
      const ferry = await startFerry({
        auth: ["gssapi"],
        gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection: [level] },
        log: { level: "silent" },
      });
      const results: { mbps: number; cpuMsPerMiB: number }[] = [];
      for (let i = 0; i < runs; i++) results.push(await measure(ferry.port, sink.port, level, sink.received));
      await ferry.close();
      const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const mbps = median(results.map((r) => r.mbps));
      const cpu = median(results.map((r) => r.cpuMsPerMiB));
      console.log(
        `${level.padEnd(16)} ${mbps.toFixed(0).padStart(6)} MB/s  ${cpu.toFixed(1).padStart(6)} CPU ms/MiB   (runs: ${results.map((r) => r.mbps.toFixed(0)).join(", ")} MB/s)`,
      );
    }
  } finally {
    sink.close();
    await realm.stop();
  }
}

await main();
