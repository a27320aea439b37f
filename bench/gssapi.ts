// Throughput of a GSSAPI-authenticated CONNECT at each protection level, one direction
// (client → target), against a throwaway local KDC, and the proxy's CPU per MiB: `ferry serve`
// and, when Dante with GSSAPI is built (scripts/build-dante-gssapi.sh), Dante's sockd, each in a
// process of its own, driven by the same clients: Ferry's client library (in this process, with
// the target) and Dante's client (socksify socat). Runs alternate between the proxies, so drift on
// a shared machine falls on both.
//   npm run build && node dist/bench/gssapi.js [MiB per run, default 128] [runs, default 5]
//   BENCH_CLIENTS=ferry leaves Dante's client out (it is the slow one: ~20 MB/s).
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import os from "node:os";
import { performance } from "node:perf_hooks";
import { loadGssapi } from "../src/auth/gssapi-native.js";
import type { ProtectionName } from "../src/protocol/gssapi.js";
import { spawnFerry } from "../test/helpers/ferry-process.js";
import { gssapiConnect } from "../test/helpers/gssapi-client.js";
import { startTestRealm, type TestRealm } from "../test/helpers/kdc.js";
import type { Daemon } from "../test/helpers/process.js";
import { type DanteBuild, findDanteGssapi, socksifiedSend, startSockd } from "./gssapi-dante.js";
import { descendants, sampleTree } from "./proc-tree.js";

const mib = Number(process.argv[2] ?? 128);
const runs = Number(process.argv[3] ?? 5);
const total = mib * 1024 * 1024;
const LEVELS = ["none", "integrity", "confidentiality"] as const;

interface Result {
  mbps: number;
  /** The proxy's CPU time (its whole process tree, threads included) per MiB carried. */
  proxyMsPerMiB: number;
}

/** `send` timed as it reports, with the CPU the proxy's processes used meanwhile. */
async function measured(proxy: Daemon, send: () => Promise<number>): Promise<Result> {
  const before = sampleTree(proxy.pid);
  const mbps = await send();
  const after = sampleTree(proxy.pid);
  return { mbps, proxyMsPerMiB: (after.cpuMs - before.cpuMs) / mib };
}

/**
 * With two CPUs or more, the proxy under test gets CPU 1 to itself (all its processes and
 * threads) and everything else shares CPU 0: this process (Ferry's client and the target), Dante's
 * client, the KDC. Both proxies then run on one core each, as a proxy whose host is busy with
 * other work would; BENCH_PIN=0 leaves the scheduler free.
 */
const pin = os.availableParallelism() >= 2 && process.env.BENCH_PIN !== "0";

function pinTree(root: number, cpu: number): void {
  if (!pin) return;
  for (const pid of [root, ...descendants(root)])
    spawnSync("taskset", ["-a", "-p", "-c", String(cpu), String(pid)], { stdio: "ignore" });
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

/** Ferry's client, in this process: MB/s from its first write to the target's last byte. */
async function ferryClient(proxyPort: number, sink: Sink, level: ProtectionName): Promise<number> {
  const conn = await gssapiConnect(
    proxyPort,
    { host: "127.0.0.1", port: sink.port },
    { service: "rcmd@localhost", protection: [level] },
  );
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const arrived = sink.next();
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    sent += chunk.length;
    if (!conn.stream.write(chunk)) await once(conn.stream, "drain");
  }
  const { last } = await arrived;
  conn.stream.destroy();
  return total / ((last - start) / 1000) / 1e6;
}

/** Dante's client in its own process: MB/s at the target, first byte to last. */
async function danteClient(
  dante: DanteBuild,
  realm: TestRealm,
  proxyPort: number,
  sink: Sink,
  level: ProtectionName,
): Promise<number> {
  const arrived = sink.next();
  await socksifiedSend(dante, realm, proxyPort, level, sink.port, total);
  const { first, last } = await arrived;
  return total / ((last - first) / 1000) / 1e6;
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

function report(path: string, level: ProtectionName, results: Result[]): void {
  const mbps = median(results.map((r) => r.mbps));
  const cpu = median(results.map((r) => r.proxyMsPerMiB));
  console.log(
    `${path.padEnd(24)} ${level.padEnd(16)} ${mbps.toFixed(0).padStart(5)} MB/s ${cpu.toFixed(2).padStart(6)} proxy CPU ms/MiB   runs: ${results.map((r) => r.mbps.toFixed(0)).join(", ")} MB/s`,
  );
}

function ratio(path: string, level: ProtectionName, ferry: Result[], dante: Result[]): void {
  const speed = median(ferry.map((r) => r.mbps)) / median(dante.map((r) => r.mbps));
  const cpu = median(dante.map((r) => r.proxyMsPerMiB)) / median(ferry.map((r) => r.proxyMsPerMiB));
  console.log(
    `  ${path}, ${level}: Ferry / Dante throughput ${speed.toFixed(2)}x, Dante / Ferry CPU per MiB ${cpu.toFixed(2)}x`,
  );
}

/** A path measured once uncounted (a Node proxy's first transfer runs before the JIT has warmed up), then `runs` times. */
interface Path {
  name: string;
  proxy: Daemon;
  send: () => Promise<number>;
  results: Result[];
}

async function main(): Promise<void> {
  pinTree(process.pid, 0);
  loadGssapi();
  const realm = await startTestRealm();
  const sink = await startSink();
  const dante = findDanteGssapi();
  const withDanteClient = typeof dante !== "string" && process.env.BENCH_CLIENTS !== "ferry";
  try {
    console.log(
      `GSSAPI CONNECT throughput, ${mib} MiB client → target, median of ${runs} runs${pin ? ", each proxy on CPU 1, the rest on CPU 0" : ""}`,
    );
    for (const level of LEVELS) {
      const served = await spawnFerry({
        env: { ...process.env, ...realm.env },
        config: (listen) => ({
          listen: [listen],
          auth: ["gssapi"],
          gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection: [level] },
        }),
      });
      const sockd = typeof dante === "string" ? undefined : await startSockd(dante, realm, level);
      pinTree(served.pid, 1);
      if (sockd) pinTree(sockd.pid, 1);
      try {
        const paths: Path[] = [
          {
            name: "Ferry client → Ferry",
            proxy: served,
            send: () => ferryClient(served.port, sink, level),
            results: [],
          },
        ];
        if (sockd) {
          paths.push({
            name: "Ferry client → Dante",
            proxy: sockd,
            send: () => ferryClient(sockd.port, sink, level),
            results: [],
          });
        }
        if (sockd && withDanteClient && typeof dante !== "string") {
          paths.push(
            {
              name: "Dante client → Ferry",
              proxy: served,
              send: () => danteClient(dante, realm, served.port, sink, level),
              results: [],
            },
            {
              name: "Dante client → Dante",
              proxy: sockd,
              send: () => danteClient(dante, realm, sockd.port, sink, level),
              results: [],
            },
          );
        }
        for (const p of paths) await p.send();
        for (let i = 0; i < runs; i++) for (const p of paths) p.results.push(await measured(p.proxy, p.send));
        for (const p of paths) report(p.name, level, p.results);
        if (paths.length > 1) ratio("Ferry's client", level, paths[0]!.results, paths[1]!.results);
        if (paths.length > 3) ratio("Dante's client", level, paths[2]!.results, paths[3]!.results);
      } finally {
        await served.stop();
        await sockd?.stop();
      }
    }
    if (typeof dante === "string") console.log(`(Dante rows left out: ${dante})`);
  } finally {
    sink.close();
    await realm.stop();
  }
}

await main();
