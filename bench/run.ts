/**
 * `npm run bench [-- --quick] [-- --runs N]`: direct TCP, the minimal Node SOCKS5 relay and Ferry,
 * side by side. Every party runs in its own process: the load generator, the target servers,
 * and each proxy. Each measurement is repeated and the median reported, because the machine is
 * shared and noisy. See docs/benchmark.md for what each number means.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type {
  HoldResult,
  LoadReply,
  LoadRequest,
  SessionsResult,
  TargetPorts,
  ThroughputResult,
  Via,
} from "./protocol.js";
import { median, percentile } from "./protocol.js";

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/bench → the repository root, where bin/ferry lives.
const root = path.resolve(here, "..", "..");

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    runs: { type: "string" },
    seconds: { type: "string" },
    sessions: { type: "string" },
    concurrency: { type: "string" },
    idle: { type: "string" },
    only: { type: "string" },
    json: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (flags.help) {
  process.stdout.write(`usage: npm run bench [-- options]
  --quick            a short smoke run (1 run, 1 s streams, 300 sessions, 300 idle connections)
  --runs N           repetitions of every measurement; medians are reported (default 5)
  --seconds S        length of each one-stream throughput measurement (default 3)
  --sessions N       sessions per sessions/s measurement (default 4000)
  --concurrency N    sessions in flight (default 64)
  --idle N           idle connections held for the memory measurement (default 5000)
  --only LIST        comma-separated subset of: throughput,sessions,memory
  --json FILE        also write every raw figure to FILE
`);
  process.exit(0);
}

const int = (v: string | undefined, fallback: number): number => {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`expected a positive number, got "${v}"`);
  return n;
};
const quick = flags.quick ?? false;
const settings = {
  runs: int(flags.runs, quick ? 1 : 5),
  seconds: int(flags.seconds, quick ? 1 : 3),
  sessions: int(flags.sessions, quick ? 300 : 4000),
  concurrency: int(flags.concurrency, 64),
  idle: int(flags.idle, quick ? 300 : 5000),
};
const only = new Set((flags.only ?? "throughput,sessions,memory").split(","));
const notes: string[] = [];

// ---------------------------------------------------------------------------------------------
// Child processes: every one is tracked by PID and stopped by PID, also when we fail.

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

function killAll(): void {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {}
    }
  }
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

const stopping = new Set<ChildProcess>();
async function stop(child: ChildProcess, graceMs = 3000): Promise<void> {
  stopping.add(child);
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = once(child, "exit");
  process.kill(child.pid, "SIGTERM");
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL");
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

/** Soft and hard "Max open files" of this process. */
function fdLimits(): { soft: number; hard: number } {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  const [soft, hard] = (line?.match(/(\d+|unlimited)\s+(\d+|unlimited)/)?.slice(1) ?? []).map((v) =>
    v === "unlimited" ? Number.POSITIVE_INFINITY : Number(v),
  );
  return { soft: soft ?? 1024, hard: hard ?? 1024 };
}

/**
 * Spawns `node ARGS` with at least `nofile` descriptors allowed: when our own soft limit is
 * lower, through `sh -c 'ulimit -n N && exec node …'` (exec keeps the PID: it is the node process).
 */
function spawnNode(args: string[], nofile: number, stdio: "ipc" | "pipe-ipc"): ChildProcess {
  const io = stdio === "ipc" ? ["ignore", "inherit", "inherit", "ipc"] : ["ignore", "ignore", "pipe", "ipc"];
  const { soft } = fdLimits();
  const child =
    soft >= nofile
      ? spawn(process.execPath, args, { stdio: io as never })
      : spawn("sh", ["-c", `ulimit -n ${nofile} && exec "$0" "$@"`, process.execPath, ...args], {
          stdio: io as never,
        });
  return track(child);
}

function readyMessage<T>(child: ChildProcess, what: string, timeoutMs = 15_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${what} did not start within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.once("exit", (code) => reject(new Error(`${what} exited with ${code} before it was ready`)));
    child.on("message", (m: { ready?: T }) => {
      if (m.ready !== undefined) {
        clearTimeout(timer);
        resolve(m.ready);
      }
    });
  });
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** VmRSS of a process, in KiB. */
function rssKiB(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/);
  if (!m) throw new Error(`no VmRSS for PID ${pid}`);
  return Number(m[1]);
}

const TICKS = 100; // USER_HZ on Linux
/** CPU time (user + system) a process and its live children (Ferry's workers) have used so far, in ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  let ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS;
  let children: string[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").split(" ").filter(Boolean);
  } catch {}
  for (const child of children) ms += cpuMs(Number(child));
  return ms;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// The parties.

const NOFILE = settings.idle * 2 + 512;
/** Extra node flags for both proxies, e.g. "--cpu-prof --cpu-prof-dir=prof" to profile them. */
const PROXY_NODE_ARGS = (process.env.BENCH_PROXY_NODE_ARGS ?? "").split(" ").filter(Boolean);

class Loader {
  private nextId = 1;
  private readonly pending = new Map<number, (r: LoadReply) => void>();
  constructor(readonly child: ChildProcess) {
    child.on("message", (m: LoadReply | { ready: true }) => {
      if ("id" in m) {
        this.pending.get(m.id)?.(m);
        this.pending.delete(m.id);
      }
    });
  }
  static async start(): Promise<Loader> {
    const child = spawnNode([path.join(here, "load.js")], NOFILE, "ipc");
    await readyMessage(child, "load generator");
    return new Loader(child);
  }
  run<T>(req: LoadRequest): Promise<T> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, (r) => (r.ok ? resolve(r.result as T) : reject(new Error(r.error))));
      this.child.send({ id, req });
    });
  }
}

interface Proxy {
  name: "minimal" | "ferry";
  port: number;
  child: ChildProcess;
  stderr: () => string;
}

async function startMinimal(): Promise<Proxy> {
  const child = spawnNode([...PROXY_NODE_ARGS, path.join(here, "minimal-relay.js")], NOFILE, "ipc");
  const port = await readyMessage<number>(child, "minimal relay");
  return { name: "minimal", port, child, stderr: () => "" };
}

let tmp: string | undefined;
async function startFerry(loader: Loader, echoPort: number): Promise<Proxy> {
  tmp ??= mkdtempSync(path.join(os.tmpdir(), "ferry-bench-"));
  const port = await freePort();
  const config = path.join(tmp, `ferry-${port}.yaml`);
  // The default limits (1000 sessions, 64 per client) would refuse the idle-memory run.
  // BENCH_FERRY_WORKERS=N runs Ferry with N workers (docs/workers.md); CPU then counts them all.
  writeFileSync(
    config,
    `listen: ["127.0.0.1:${port}"]\nworkers: ${process.env.BENCH_FERRY_WORKERS ?? 1}\nlimits:\n  sessions: ${settings.idle + 1000}\n  sessionsPerClient: ${settings.idle + 1000}\n`,
  );
  const child = spawnNode(
    [...PROXY_NODE_ARGS, path.join(root, "bin", "ferry"), "serve", "--config", config, "--log-level", "warn"],
    NOFILE,
    "pipe-ipc",
  );
  let err = "";
  child.stderr?.on("data", (c: Buffer) => {
    err = (err + c.toString()).slice(-4000);
  });
  const proxy: Proxy = { name: "ferry", port, child, stderr: () => err };
  child.once("exit", (code, signal) => {
    if (!stopping.has(child))
      process.stderr.write(`ferry (PID ${child.pid}) exited unexpectedly (${code ?? signal}):\n${err}\n`);
  });
  // Ready when one whole session goes through.
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ferry exited with ${child.exitCode}:\n${err}`);
    const r = await loader
      .run<SessionsResult>({
        op: "sessions",
        via: { kind: "socks5", port },
        port: echoPort,
        count: 1,
        concurrency: 1,
        timeoutMs: 2000,
      })
      .catch(() => undefined);
    if (r && r.ok === 1) return proxy;
    if (Date.now() > deadline) throw new Error(`ferry did not serve within 15 s:\n${err}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

type System = "direct" | "minimal" | "ferry";
const SYSTEMS: System[] = ["direct", "minimal", "ferry"];

interface Figures {
  uploadMBps: number[];
  downloadMBps: number[];
  sessionsPerSec: number[];
  p50ms: number[];
  p99ms: number[];
  /** Proxy CPU per GB relayed in the one-stream runs (both directions), ms. */
  cpuPerGBms: number[];
  /** Proxy CPU per session, µs. */
  cpuPerSessionUs: number[];
  /** Load generator CPU / wall time during the sessions run. */
  loaderBusy: number[];
  idleKiB: number[];
  idleHeld: number[];
}
const figures: Record<System, Figures> = {
  direct: blank(),
  minimal: blank(),
  ferry: blank(),
};
function blank(): Figures {
  return {
    uploadMBps: [],
    downloadMBps: [],
    sessionsPerSec: [],
    p50ms: [],
    p99ms: [],
    cpuPerGBms: [],
    cpuPerSessionUs: [],
    loaderBusy: [],
    idleKiB: [],
    idleHeld: [],
  };
}

const rotate = <T>(list: T[], by: number): T[] => list.map((_, i) => list[(i + by) % list.length]!);

function progress(text: string): void {
  process.stderr.write(`  ${text}\n`);
}

async function main(): Promise<void> {
  const limits = fdLimits();
  if (limits.hard < NOFILE) {
    const fit = Math.floor((limits.hard - 512) / 2);
    notes.push(
      `the fd hard limit is ${limits.hard}, too low for ${settings.idle} idle connections; held ${fit} instead`,
    );
    settings.idle = Math.max(1, fit);
  }
  process.stderr.write(
    `ferry bench: ${settings.runs} run(s); ${settings.seconds} s per stream; ${settings.sessions} sessions, ${settings.concurrency} in flight; ${settings.idle} idle connections\n`,
  );

  const targetsChild = spawnNode([path.join(here, "targets.js")], NOFILE, "ipc");
  const targets = await readyMessage<TargetPorts>(targetsChild, "target servers");
  const loader = await Loader.start();

  try {
    if (only.has("throughput") || only.has("sessions")) {
      const minimal = await startMinimal();
      const ferry = await startFerry(loader, targets.echo);
      const proxies = { minimal, ferry };
      const via = (s: System): Via =>
        s === "direct" ? { kind: "direct" } : { kind: "socks5", port: proxies[s].port };
      // Warm-up: let every path JIT before anything counts.
      for (const s of SYSTEMS) {
        await loader.run({
          op: "sessions",
          via: via(s),
          port: targets.echo,
          count: 200,
          concurrency: 16,
          timeoutMs: 20_000,
        });
        if (only.has("throughput"))
          await loader.run({ op: "upload", via: via(s), port: targets.sink, seconds: 0.3 });
      }
      for (let run = 0; run < settings.runs; run++) {
        for (const s of rotate(SYSTEMS, run)) {
          if (only.has("throughput")) {
            const pid = s === "direct" ? undefined : proxies[s].child.pid;
            const stream = async (op: "upload" | "download"): Promise<ThroughputResult> => {
              const cpu0 = pid ? cpuMs(pid) : 0;
              const r = await loader.run<ThroughputResult>({
                op,
                via: via(s),
                port: op === "upload" ? targets.sink : targets.source,
                seconds: settings.seconds,
              });
              // CPU the proxy spent per GB moved: steadier than MB/s on a busy machine.
              if (pid) figures[s].cpuPerGBms.push((cpuMs(pid) - cpu0) / (r.bytes / 1e9));
              return r;
            };
            const up = await stream("upload");
            const down = await stream("download");
            figures[s].uploadMBps.push(up.bytes / up.seconds / 1e6);
            figures[s].downloadMBps.push(down.bytes / down.seconds / 1e6);
            progress(
              `run ${run + 1} ${s}: upload ${fmt(up.bytes / up.seconds / 1e6)} MB/s, download ${fmt(down.bytes / down.seconds / 1e6)} MB/s` +
                (pid ? `, proxy CPU ${fmt(median(figures[s].cpuPerGBms.slice(-2)))} ms/GB` : ""),
            );
          }
          if (only.has("sessions")) {
            const pid = s === "direct" ? undefined : proxies[s].child.pid;
            const cpu0 = pid ? cpuMs(pid) : 0;
            const r = await loader.run<SessionsResult>({
              op: "sessions",
              via: via(s),
              port: targets.echo,
              count: settings.sessions,
              concurrency: settings.concurrency,
              timeoutMs: 120_000,
            });
            if (r.errors > 0)
              notes.push(`run ${run + 1} ${s}: ${r.errors} sessions failed (first: ${r.firstError})`);
            const f = figures[s];
            f.sessionsPerSec.push(r.ok / (r.wallMs / 1000));
            f.p50ms.push(percentile(r.latencies, 50));
            f.p99ms.push(percentile(r.latencies, 99));
            f.loaderBusy.push(r.cpuMs / r.wallMs);
            if (pid) f.cpuPerSessionUs.push(((cpuMs(pid) - cpu0) * 1000) / Math.max(1, r.ok));
            progress(
              `run ${run + 1} ${s}: ${fmt(r.ok / (r.wallMs / 1000))} sessions/s, p50 ${fmt(percentile(r.latencies, 50), 2)} ms, p99 ${fmt(percentile(r.latencies, 99), 2)} ms`,
            );
          }
        }
      }
      await stop(minimal.child);
      await stop(ferry.child);
    }

    if (only.has("memory")) {
      // A fresh proxy per reading, so earlier measurements' heap does not hide (or pad) the cost.
      for (let run = 0; run < settings.runs; run++) {
        for (const name of rotate(["minimal", "ferry"] as const, run)) {
          const proxy = name === "minimal" ? await startMinimal() : await startFerry(loader, targets.echo);
          const pid = proxy.child.pid!;
          const via: Via = { kind: "socks5", port: proxy.port };
          await loader.run({
            op: "sessions",
            via,
            port: targets.echo,
            count: 200,
            concurrency: 16,
            timeoutMs: 20_000,
          });
          await sleep(1000);
          const before = rssKiB(pid);
          const held = await loader.run<HoldResult>({
            op: "hold",
            via,
            port: targets.echo,
            count: settings.idle,
            concurrency: settings.concurrency,
            timeoutMs: 120_000,
          });
          await sleep(1000);
          const after = rssKiB(pid);
          await loader.run({ op: "release" });
          await stop(proxy.child);
          if (held.errors > 0 || held.open < settings.idle) {
            notes.push(
              `run ${run + 1} ${name}: held ${held.open} of ${settings.idle} (first error: ${held.firstError})`,
            );
          }
          const perConn = (after - before) / Math.max(1, held.open);
          figures[name].idleKiB.push(perConn);
          figures[name].idleHeld.push(held.open);
          progress(
            `run ${run + 1} ${name}: RSS ${before} → ${after} KiB for ${held.open} idle connections: ${fmt(perConn, 2)} KiB each`,
          );
        }
      }
    }
  } finally {
    loader.child.send({ id: 0, req: { op: "exit" } satisfies LoadRequest });
    await stop(loader.child);
    await stop(targetsChild);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
  report();
}

// ---------------------------------------------------------------------------------------------
// The table.

function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return "—";
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function report(): void {
  const m = (s: System, k: keyof Figures): number => median(figures[s][k]);
  const ratio = (a: number, b: number): string => (Number.isFinite(a / b) ? `${(a / b).toFixed(2)}x` : "—");
  type Row = [string, keyof Figures, number, string, boolean];
  // [label, key, digits, target, proxy-only]
  const rows: Row[] = [
    ["upload, one stream (MB/s)", "uploadMBps", 0, ">= 0.95x minimal", false],
    ["download, one stream (MB/s)", "downloadMBps", 0, ">= 0.95x minimal", false],
    ["proxy CPU per GB relayed (ms)", "cpuPerGBms", 0, "", true],
    ["sessions per second", "sessionsPerSec", 0, ">= 0.90x minimal", false],
    ["session latency p50 (ms)", "p50ms", 2, "", false],
    ["session latency p99 (ms)", "p99ms", 2, "", false],
    ["proxy CPU per session (µs)", "cpuPerSessionUs", 0, "", true],
    ["RSS per idle connection (KiB)", "idleKiB", 2, "<= 12 KB", true],
  ];
  const table = [
    ["metric (median)", "direct", "minimal", "ferry", "ferry/minimal", "ferry/direct", "target"],
  ];
  for (const [label, key, digits, target, proxyOnly] of rows) {
    if (figures.ferry[key].length === 0 && figures.minimal[key].length === 0) continue;
    const d = proxyOnly ? Number.NaN : m("direct", key);
    table.push([
      label,
      fmt(d, digits),
      fmt(m("minimal", key), digits),
      fmt(m("ferry", key), digits),
      ratio(m("ferry", key), m("minimal", key)),
      proxyOnly ? "—" : ratio(m("ferry", key), d),
      target,
    ]);
  }
  const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const line = (r: string[]): string =>
    r.map((cell, c) => (c === 0 || c === 6 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  const out: string[] = [];
  out.push("");
  out.push(
    `Ferry benchmark — ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, ${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? "?"}), Node ${process.version}`,
  );
  out.push(
    `medians of ${settings.runs} run(s); ${settings.seconds} s per stream; ${settings.sessions} sessions, ${settings.concurrency} in flight; ${median(figures.ferry.idleHeld.concat(figures.minimal.idleHeld)) || settings.idle} idle connections`,
  );
  out.push("");
  out.push(line(table[0]!));
  out.push(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of table.slice(1)) out.push(line(r));

  const verdicts: string[] = [];
  const check = (label: string, ok: boolean, detail: string): void => {
    verdicts.push(`${ok ? "meets" : "MISSES"}  ${label}: ${detail}`);
  };
  if (figures.ferry.uploadMBps.length > 0) {
    for (const key of ["uploadMBps", "downloadMBps"] as const) {
      const r = m("ferry", key) / m("minimal", key);
      check(
        `${key === "uploadMBps" ? "upload" : "download"} >= 0.95x minimal`,
        r >= 0.95,
        `${r.toFixed(2)}x`,
      );
    }
  }
  if (figures.ferry.sessionsPerSec.length > 0) {
    const r = m("ferry", "sessionsPerSec") / m("minimal", "sessionsPerSec");
    check("sessions/s >= 0.90x minimal", r >= 0.9, `${r.toFixed(2)}x`);
  }
  if (figures.ferry.idleKiB.length > 0) {
    // The "12 KB" read as 12 × 1000 bytes, the stricter reading.
    const kb = (m("ferry", "idleKiB") * 1024) / 1000;
    check("idle memory <= 12 KB per connection", kb <= 12, `${kb.toFixed(2)} KB`);
  }
  if (verdicts.length > 0) out.push("", ...verdicts);
  if (figures.ferry.loaderBusy.length > 0) {
    const busy = Math.max(...SYSTEMS.map((s) => median(figures[s].loaderBusy)));
    out.push(
      "",
      `load generator CPU during the sessions runs: at most ${(busy * 100).toFixed(0)}% of one core (it has headroom when below 100%)`,
    );
  }
  if (notes.length > 0) out.push("", "notes:", ...notes.map((n) => `  - ${n}`));
  out.push("");
  process.stdout.write(out.join("\n"));
  if (flags.json) {
    writeFileSync(
      flags.json,
      `${JSON.stringify({ date: new Date().toISOString(), settings, figures, notes }, null, 2)}\n`,
    );
  }
}

main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
  killAll();
  process.exit(1);
});
