/**
 * `npm run bench [-- options]`: Ferry side by side with its peers (direct TCP, a minimal Node
 * SOCKS5 relay, microsocks, Dante) in one run. Every party runs in its own process (tree): the
 * load generator, the target servers and each proxy. The systems take turns within each
 * repetition (the order rotates) and the medians are reported, because the machine is shared and
 * noisy. See docs/benchmark.md for what each number means.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { fdLimits, readyMessage, spawnNode, stop } from "./children.js";
import { blankFigures, type Figures, type RawRecord, SYSTEMS, type System } from "./figures.js";
import { hasCc, Loader, type LoaderKind } from "./loader.js";
import { checkPeers, configurePeers, type ProxyName, type RunningProxy, startProxy } from "./peers.js";
import { sampleTree, treeMemory } from "./proc-tree.js";
import type {
  HoldResult,
  LoadRequest,
  SessionsResult,
  TargetPorts,
  ThroughputResult,
  Via,
} from "./protocol.js";
import { percentile, UsageError } from "./protocol.js";
import { fmt, report } from "./report.js";

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/bench → the repository root, where bin/ferry and bench/load.c live.
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
    systems: { type: "string" },
    loader: { type: "string" },
    "ferry-workers": { type: "string" },
    json: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (flags.help) {
  process.stdout.write(`usage: npm run bench [-- options]
  --quick              a short smoke run (1 run, 1 s streams, 300 sessions, 300 idle connections)
  --runs N             repetitions of every measurement; medians are reported (default 5)
  --seconds S          length of each one-stream throughput measurement (default 3)
  --sessions N         sessions per sessions/s measurement (default 4000)
  --concurrency N      sessions in flight (default 64)
  --idle N             idle connections held for the memory measurement (default 5000)
  --only LIST          comma-separated subset of: throughput,sessions,memory
  --systems LIST       comma-separated subset of: ${SYSTEMS.join(",")} (default all)
  --loader node|c      the load generator: bench/load.c compiled with cc (default when cc exists)
                       or bench/load.ts
  --ferry-workers N    run \`ferry serve --workers N\`
  --json FILE          also write every raw figure to FILE
environment: BENCH_PROXY_NODE_ARGS="--cpu-prof --cpu-prof-dir=prof" passes node flags to the
Node proxies (minimal, ferry), e.g. to profile them.
`);
  process.exit(0);
}

function usage(message: string): never {
  process.stderr.write(`bench: ${message} (see --help)\n`);
  process.exit(2);
}
const int = (v: string | undefined, fallback: number): number => {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) usage(`expected a positive number, got "${v}"`);
  return n;
};
function subset<T extends string>(flag: string, value: string | undefined, all: readonly T[]): T[] {
  if (value === undefined) return [...all];
  const list = value.split(",").map((v) => v.trim());
  const bad = list.filter((v) => !all.includes(v as T));
  if (bad.length > 0 || list.length === 0)
    usage(`${flag}: unknown ${bad.join(", ")}; choose from ${all.join(",")}`);
  return all.filter((v) => list.includes(v));
}

const quick = flags.quick ?? false;
const settings = {
  runs: int(flags.runs, quick ? 1 : 5),
  seconds: int(flags.seconds, quick ? 1 : 3),
  sessions: int(flags.sessions, quick ? 300 : 4000),
  concurrency: int(flags.concurrency, 64),
  idle: int(flags.idle, quick ? 300 : 5000),
  systems: subset("--systems", flags.systems, SYSTEMS),
  only: subset("--only", flags.only, ["throughput", "sessions", "memory"] as const),
  loader: (flags.loader ?? (hasCc() ? "c" : "node")) as LoaderKind,
  ferryWorkers: flags["ferry-workers"] === undefined ? undefined : int(flags["ferry-workers"], 1),
};
if (settings.loader !== "node" && settings.loader !== "c") usage('--loader: "node" or "c"');
const only = new Set<string>(settings.only);
const proxies = settings.systems.filter((s): s is ProxyName => s !== "direct");
const notes: string[] = [];
const raw: RawRecord[] = [];
const figures = Object.fromEntries(SYSTEMS.map((s) => [s, blankFigures()])) as Record<System, Figures>;

const NOFILE = settings.idle * 2 + 512;
/** Extra node flags for the Node proxies, e.g. "--cpu-prof --cpu-prof-dir=prof" to profile them. */
const PROXY_NODE_ARGS = (process.env.BENCH_PROXY_NODE_ARGS ?? "").split(" ").filter(Boolean);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const rotate = <T>(list: T[], by: number): T[] => list.map((_, i) => list[(i + by) % list.length]!);
const progress = (text: string): void => void process.stderr.write(`  ${text}\n`);

/** Which code "ferry" was: its last commit in this checkout, and whether it had local changes. */
function ferryRevision(): string {
  // The last commit that changed Ferry itself, not the bench's own commits.
  const rev = spawnSync("git", ["-C", root, "log", "-1", "--format=%h", "--", "src", "bin"], {
    encoding: "utf8",
  });
  if (rev.status !== 0 || !rev.stdout.trim()) return "unknown";
  const dirty = spawnSync("git", ["-C", root, "status", "--porcelain", "--", "src", "bin"], {
    encoding: "utf8",
  });
  return `${rev.stdout.trim()}${dirty.stdout.trim() ? "+local changes" : ""}`;
}

async function main(): Promise<void> {
  const loadAtStart = os.loadavg()[0]!;
  const limits = fdLimits();
  if (limits.hard < NOFILE) {
    const fit = Math.floor((limits.hard - 512) / 2);
    notes.push(
      `the fd hard limit is ${limits.hard}, too low for ${settings.idle} idle connections; held ${fit} instead`,
    );
    settings.idle = Math.max(1, fit);
  }
  checkPeers(proxies, root, settings.ferryWorkers);
  process.stderr.write(
    `ferry bench: ${settings.systems.join(", ")}; ${settings.runs} run(s); ${settings.seconds} s per stream; ${settings.sessions} sessions, ${settings.concurrency} in flight; ${settings.idle} idle connections; ${settings.loader} load generator\n`,
  );

  const tmp = mkdtempSync(path.join(os.tmpdir(), "ferry-bench-"));
  const targetsChild = spawnNode([path.join(here, "targets.js")], NOFILE, "ipc");
  let loader: Loader | undefined;
  try {
    const targets = await readyMessage<TargetPorts>(targetsChild, "target servers");
    const load = await Loader.start(settings.loader, here, root, NOFILE);
    loader = load;
    configurePeers({
      here,
      root,
      tmp,
      nofile: NOFILE,
      sessions: settings.idle + 1000,
      nodeArgs: PROXY_NODE_ARGS,
      ferryWorkers: settings.ferryWorkers,
      probe: async (port) => {
        const r = await load.run<SessionsResult>({
          op: "sessions",
          via: { kind: "socks5", port },
          port: targets.echo,
          count: 1,
          concurrency: 1,
          timeoutMs: 2000,
        });
        return r.ok === 1;
      },
    });
    if (only.has("throughput") || only.has("sessions")) await speed(load, targets);
    if (only.has("memory")) await memory(load, targets);
  } finally {
    if (loader) {
      loader.child.send({ id: 0, req: { op: "exit" } satisfies LoadRequest });
      await stop(loader.child);
    }
    await stop(targetsChild);
    rmSync(tmp, { recursive: true, force: true });
  }

  const cpu = os.cpus();
  const heading = [
    `Ferry benchmark — ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, ${os.hostname()}, ${cpu.length} cores (${cpu[0]?.model.trim() ?? "?"}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}; load average ${loadAtStart.toFixed(1)} at the start, ${os.loadavg()[0]!.toFixed(1)} at the end`,
    `ferry: src/ at ${ferryRevision()}${settings.ferryWorkers !== undefined ? `, --workers ${settings.ferryWorkers}` : ""}; ${settings.loader} load generator; medians of ${settings.runs} run(s); ${settings.seconds} s per stream; ${settings.sessions} sessions, ${settings.concurrency} in flight; ${settings.idle} idle connections`,
  ];
  process.stdout.write(report({ figures, systems: settings.systems, heading, notes }));
  if (flags.json) {
    writeFileSync(
      flags.json,
      `${JSON.stringify({ date: new Date().toISOString(), heading, settings, figures, raw, notes }, null, 2)}\n`,
    );
  }
}

/** Streams and sessions: every system started once, then the rounds interleave them. */
async function speed(loader: Loader, targets: TargetPorts): Promise<void> {
  const running = new Map<ProxyName, RunningProxy>();
  try {
    for (const name of proxies) running.set(name, await startProxy(name));
    const via = (s: System): Via =>
      s === "direct" ? { kind: "direct" } : { kind: "socks5", port: running.get(s)!.port };
    // Warm-up: let every path JIT (and Dante fork its children) before anything counts.
    for (const s of settings.systems) {
      await loader.run({
        op: "sessions",
        via: via(s),
        port: targets.echo,
        count: 200,
        concurrency: 16,
        timeoutMs: 20_000,
      });
      if (only.has("throughput")) {
        // Long enough for a Node proxy's heap to reach its working size (its first seconds of
        // streaming take many more page faults than the rest).
        const seconds = quick ? 0.3 : 1;
        await loader.run({ op: "upload", via: via(s), port: targets.sink, seconds });
        await loader.run({ op: "download", via: via(s), port: targets.source, seconds });
      }
    }
    for (let run = 1; run <= settings.runs; run++) {
      for (const s of rotate(settings.systems, run - 1)) {
        const pid = s === "direct" ? undefined : running.get(s)!.pid;
        if (only.has("throughput")) await streams(loader, targets, run, s, via(s), pid);
        if (only.has("sessions")) await sessions(loader, targets, run, s, via(s), pid);
      }
    }
  } finally {
    for (const proxy of running.values()) await stop(proxy.child);
  }
}

async function streams(
  loader: Loader,
  targets: TargetPorts,
  run: number,
  s: System,
  via: Via,
  pid?: number,
): Promise<void> {
  const f = figures[s];
  const before = pid ? sampleTree(pid) : undefined;
  const one = async (op: "upload" | "download"): Promise<ThroughputResult> => {
    const t0 = pid ? sampleTree(pid) : undefined;
    const r = await loader.run<ThroughputResult>({
      op,
      via,
      port: op === "upload" ? targets.sink : targets.source,
      seconds: settings.seconds,
    });
    const t1 = pid ? sampleTree(pid) : undefined;
    raw.push({
      run,
      system: s,
      op,
      bytes: r.bytes,
      seconds: r.seconds,
      MBps: r.bytes / r.seconds / 1e6,
      loaderCpuMs: r.cpuMs,
      loaderWallMs: r.wallMs,
      proxyCpuMs: t0 && t1 ? t1.cpuMs - t0.cpuMs : undefined,
      proxyMinflt: t0 && t1 ? t1.minflt - t0.minflt : undefined,
      proxyProcesses: t1?.processes,
    });
    return r;
  };
  const up = await one("upload");
  const down = await one("download");
  f.uploadMBps.push(up.bytes / up.seconds / 1e6);
  f.downloadMBps.push(down.bytes / down.seconds / 1e6);
  f.loaderBusyStreams.push((up.cpuMs + down.cpuMs) / (up.wallMs + down.wallMs));
  let extra = "";
  if (pid && before) {
    // Work per byte over both directions: steadier than MB/s on a busy machine.
    const after = sampleTree(pid);
    const gb = (up.bytes + down.bytes) / 1e9;
    f.cpuSecPerGB.push((after.cpuMs - before.cpuMs) / 1000 / gb);
    f.minfltPerGB.push((after.minflt - before.minflt) / gb);
    extra = `, CPU ${fmt(f.cpuSecPerGB.at(-1)!, 2)} s/GB, ${fmt(f.minfltPerGB.at(-1)!)} minflt/GB`;
  }
  progress(
    `run ${run} ${s}: upload ${fmt(f.uploadMBps.at(-1)!)} MB/s, download ${fmt(f.downloadMBps.at(-1)!)} MB/s${extra}`,
  );
}

async function sessions(
  loader: Loader,
  targets: TargetPorts,
  run: number,
  s: System,
  via: Via,
  pid?: number,
): Promise<void> {
  const f = figures[s];
  const before = pid ? sampleTree(pid) : undefined;
  const r = await loader.run<SessionsResult>({
    op: "sessions",
    via,
    port: targets.echo,
    count: settings.sessions,
    concurrency: settings.concurrency,
    timeoutMs: 120_000,
  });
  const after = pid ? sampleTree(pid) : undefined;
  if (r.errors > 0) notes.push(`run ${run} ${s}: ${r.errors} sessions failed (first: ${r.firstError})`);
  const rate = r.ok / (r.wallMs / 1000);
  const p50 = percentile(r.latencies, 50);
  const p99 = percentile(r.latencies, 99);
  f.sessionsPerSec.push(rate);
  f.p50ms.push(p50);
  f.p99ms.push(p99);
  f.loaderBusySessions.push(r.cpuMs / r.wallMs);
  const proxyCpuMs = before && after ? after.cpuMs - before.cpuMs : undefined;
  if (proxyCpuMs !== undefined && after) {
    f.cpuMsPer1kSessions.push((proxyCpuMs * 1000) / Math.max(1, r.ok));
    f.processes.push(after.processes);
  }
  raw.push({
    run,
    system: s,
    op: "sessions",
    ok: r.ok,
    errors: r.errors,
    firstError: r.firstError,
    wallMs: r.wallMs,
    sessionsPerSec: rate,
    p50ms: p50,
    p90ms: percentile(r.latencies, 90),
    p99ms: p99,
    maxMs: Math.max(...r.latencies),
    loaderCpuMs: r.cpuMs,
    proxyCpuMs,
    proxyMinflt: before && after ? after.minflt - before.minflt : undefined,
    proxyProcesses: after?.processes,
  });
  progress(
    `run ${run} ${s}: ${fmt(rate)} sessions/s, p50 ${fmt(p50, 2)} ms, p99 ${fmt(p99, 2)} ms` +
      (proxyCpuMs !== undefined ? `, CPU ${fmt((proxyCpuMs * 1000) / Math.max(1, r.ok))} ms per 1k` : ""),
  );
}

/**
 * Each idle connection takes two loopback ports (the loader's and the proxy's outbound one), and
 * the previous reading's closed connections sit in TIME_WAIT for a minute: without waiting, a few
 * readings of 5,000 exhaust the ephemeral range and a listen fails with EADDRINUSE.
 */
async function portsToSpare(): Promise<void> {
  const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
    .trim()
    .split(/\s+/)
    .map(Number);
  const range = (high ?? 60999) - (low ?? 32768) + 1;
  const inUse = (): number =>
    ["/proc/net/tcp", "/proc/net/tcp6"]
      .map((f) => readFileSync(f, "utf8").split("\n").length - 2)
      .reduce((a, b) => a + Math.max(0, b), 0);
  const needed = 2 * settings.idle + 2000;
  const deadline = Date.now() + 90_000;
  if (range - inUse() >= needed) return;
  progress(`waiting for loopback ports to come back from TIME_WAIT (${inUse()} sockets, ${range} ports)`);
  while (range - inUse() < needed && Date.now() < deadline) await sleep(1000);
}

/** Idle connections: a fresh proxy per reading, so earlier runs' heap or children do not count. */
async function memory(loader: Loader, targets: TargetPorts): Promise<void> {
  for (let run = 1; run <= settings.runs; run++) {
    for (const name of rotate(proxies, run - 1)) {
      await portsToSpare();
      const proxy = await startProxy(name);
      try {
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
        const before = treeMemory(proxy.pid);
        const held = await loader.run<HoldResult>({
          op: "hold",
          via,
          port: targets.echo,
          count: settings.idle,
          concurrency: settings.concurrency,
          timeoutMs: 120_000,
        });
        await sleep(1000);
        const after = treeMemory(proxy.pid);
        await loader.run({ op: "release" });
        if (held.errors > 0 || held.open < settings.idle)
          notes.push(
            `run ${run} ${name}: held ${held.open} of ${settings.idle} (first error: ${held.firstError})`,
          );
        const n = Math.max(1, held.open);
        const f = figures[name];
        f.idleRssKiB.push((after.rssKiB - before.rssKiB) / n);
        f.idlePssKiB.push((after.pssKiB - before.pssKiB) / n);
        f.idleHeld.push(held.open);
        f.idleProcesses.push(after.processes);
        raw.push({
          run,
          system: name,
          op: "idle",
          held: held.open,
          errors: held.errors,
          firstError: held.firstError,
          rssBeforeKiB: before.rssKiB,
          rssAfterKiB: after.rssKiB,
          pssBeforeKiB: before.pssKiB,
          pssAfterKiB: after.pssKiB,
          processesBefore: before.processes,
          processesAfter: after.processes,
        });
        progress(
          `run ${run} ${name}: RSS ${before.rssKiB} → ${after.rssKiB} KiB (${after.processes} processes) for ${held.open} idle connections: ${fmt(f.idleRssKiB.at(-1)!, 2)} KiB each (PSS ${fmt(f.idlePssKiB.at(-1)!, 2)})`,
        );
      } finally {
        await stop(proxy.child);
      }
    }
  }
}

main().catch((err: Error) => {
  process.stderr.write(
    `bench failed: ${err instanceof UsageError ? err.message : (err.stack ?? err.message)}\n`,
  );
  process.exit(1);
});
