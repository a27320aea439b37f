// Throughput of a GSSAPI-authenticated CONNECT at each protection level, one direction
// (client → target), against a throwaway local KDC: Ferry's client through an in-process Ferry
// and through `ferry serve` in its own process, and, when Dante with GSSAPI is built
// (scripts/build-dante-gssapi.sh), Dante's client (socksify socat) through Ferry and through
// Dante's sockd, and Ferry's client through sockd: the same client, each proxy in its own process.
//   npm run build && node dist/bench/gssapi.js [MiB per run, default 64] [runs, default 3]
import { once } from "node:events";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { loadGssapi } from "../src/auth/gssapi-native.js";
import type { ProtectionName } from "../src/protocol/gssapi.js";
import { startFerry } from "../test/helpers/ferry.js";
import { spawnFerry } from "../test/helpers/ferry-process.js";
import { gssapiConnect } from "../test/helpers/gssapi-client.js";
import { startTestRealm, type TestRealm } from "../test/helpers/kdc.js";
import { type DanteBuild, findDanteGssapi, socksifiedSend, startSockd } from "./gssapi-dante.js";

const mib = Number(process.argv[2] ?? 64);
const runs = Number(process.argv[3] ?? 3);
const total = mib * 1024 * 1024;
const LEVELS = ["none", "integrity", "confidentiality"] as const;

interface Result {
  mbps: number;
  /** CPU time of this process per MiB: what runs in it (see each path), worker threads included. */
  cpuMsPerMiB?: number;
}

/** A target that counts bytes; `next()` resolves with the first and last byte's times of the next `total` bytes. */
async function startSink() {
  let waiter: ((t: { first: number; last: number }) => void) | undefined;
  const server = net.createServer((s) => {
    let n = 0;
    let first = 0;
    s.on("data", (c: Buffer) => {
      if (n === 0) first = performance.now();
      n += c.length;
      if (n >= total) waiter?.({ first, last: performance.now() });
    });
    s.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    next: () =>
      new Promise<{ first: number; last: number }>((r) => {
        waiter = r;
      }),
    close: () => server.close(),
  };
}
type Sink = Awaited<ReturnType<typeof startSink>>;

/** Ferry's client, in this process: timed from its first write to the target's last byte. */
async function ferryClient(proxyPort: number, sink: Sink, level: ProtectionName): Promise<Result> {
  const conn = await gssapiConnect(
    proxyPort,
    { host: "127.0.0.1", port: sink.port },
    { service: "rcmd@localhost", protection: [level] },
  );
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const arrived = sink.next();
  const cpu = process.cpuUsage();
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    sent += chunk.length;
    if (!conn.stream.write(chunk)) await once(conn.stream, "drain");
  }
  const { last } = await arrived;
  const used = process.cpuUsage(cpu);
  conn.stream.destroy();
  return { mbps: total / ((last - start) / 1000) / 1e6, cpuMsPerMiB: (used.user + used.system) / 1000 / mib };
}

/** Dante's client in its own process: timed at the target, first byte to last. */
async function danteClient(
  dante: DanteBuild,
  realm: TestRealm,
  proxyPort: number,
  sink: Sink,
  level: ProtectionName,
): Promise<Result> {
  const arrived = sink.next();
  const cpu = process.cpuUsage();
  await socksifiedSend(dante, realm, proxyPort, level, sink.port, total);
  const { first, last } = await arrived;
  const used = process.cpuUsage(cpu);
  return { mbps: total / ((last - first) / 1000) / 1e6, cpuMsPerMiB: (used.user + used.system) / 1000 / mib };
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

function report(path: string, level: ProtectionName, results: Result[], cpuLabel: string | undefined): void {
  const mbps = median(results.map((r) => r.mbps));
  const cpu = cpuLabel
    ? `${median(results.map((r) => r.cpuMsPerMiB ?? 0))
        .toFixed(1)
        .padStart(6)} CPU ms/MiB (${cpuLabel})`
    : "";
  console.log(
    `${path.padEnd(22)} ${level.padEnd(16)} ${mbps.toFixed(0).padStart(6)} MB/s  ${cpu.padEnd(40)} runs: ${results.map((r) => r.mbps.toFixed(0)).join(", ")} MB/s`,
  );
}

/**
 * `runs` timed runs after one that is not counted: a Node proxy's first transfer runs before
 * the JIT and its buffer pools have warmed up (half the later speed, measured), which says
 * nothing of a proxy that has been serving for a while. Every path gets the same warm-up.
 */
async function repeat(fn: () => Promise<Result>): Promise<Result[]> {
  await fn();
  const results: Result[] = [];
  for (let i = 0; i < runs; i++) results.push(await fn());
  return results;
}

async function main(): Promise<void> {
  loadGssapi();
  const realm = await startTestRealm();
  const sink = await startSink();
  const dante = findDanteGssapi();
  try {
    console.log(`GSSAPI CONNECT throughput, ${mib} MiB client → target, median of ${runs} runs`);
    for (const level of LEVELS) {
      const ferry = await startFerry({
        auth: ["gssapi"],
        gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection: [level] },
        log: { level: "silent" },
      });
      try {
        report(
          "Ferry → Ferry",
          level,
          await repeat(() => ferryClient(ferry.port, sink, level)),
          "client+proxy",
        );
        if (typeof dante !== "string") {
          const results = await repeat(() => danteClient(dante, realm, ferry.port, sink, level));
          report("Dante client → Ferry", level, results, "Ferry proxy");
        }
      } finally {
        await ferry.close();
      }
      // The proxy in a process of its own, as sockd is below: the same client against both.
      const served = await spawnFerry({
        env: { ...process.env, ...realm.env },
        config: (listen) => ({
          listen: [listen],
          auth: ["gssapi"],
          gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection: [level] },
        }),
      });
      try {
        report(
          "Ferry client → Ferry",
          level,
          await repeat(() => ferryClient(served.port, sink, level)),
          "Ferry client",
        );
      } finally {
        await served.stop();
      }
      if (typeof dante === "string") continue;
      const sockd = await startSockd(dante, realm, level);
      try {
        report(
          "Dante → Dante",
          level,
          await repeat(() => danteClient(dante, realm, sockd.port, sink, level)),
          undefined,
        );
        report(
          "Ferry client → Dante",
          level,
          await repeat(() => ferryClient(sockd.port, sink, level)),
          "Ferry client",
        );
      } finally {
        await sockd.stop();
      }
    }
    if (typeof dante === "string") console.log(`(Dante rows left out: ${dante})`);
  } finally {
    sink.close();
    await realm.stop();
  }
}

await main();
