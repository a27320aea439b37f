/**
 * `npm run soak`: runs `bin/ferry serve` (with the probe preload) under mixed load for a fixed
 * time, samples its memory, fds and event-loop delay, writes the samples as CSV and a markdown
 * report, and exits 1 if anything grew without bound or honest traffic failed. See
 * docs/reliability.md for the method.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseDuration } from "../src/config/units.js";
import type { ProbeSample } from "../test/helpers/ferry-probe.js";
import { startProbedFerry } from "../test/helpers/probed-ferry.js";
import { fmt, judge, type SoakSample } from "./soak-judge.js";
import { association, authFailure, bind, churn, malformed, startTargets, transfer } from "./soak-load.js";

const HELP = `npm run soak -- [options]
  --duration 5m        how long the load runs (e.g. 3m, 60m)
  --rate 300           short CONNECT sessions started per second (the bulk)
  --concurrency 96     short sessions in flight at most
  --transfers 2        long transfers in flight (each --transfer-mb there and back, sha256-checked)
  --transfer-mb 16
  --udp-rate 1         UDP associations per second (20 datagrams each)
  --bind-rate 1        BINDs per second
  --auth-fail-rate 2   wrong passwords per second, from 127.0.0.10-49
  --malformed-rate 4   malformed inputs per second, from 127.0.0.2-9
  --sample 5s          sampling interval
  --warmup 30s         samples before this are not judged (at least a tenth of the run)
  --max-error-ratio 0.001   honest sessions that may fail
  --out DIR            where samples.csv and report.md go (default: a new folder in $TMPDIR)`;

const { values: flags } = parseArgs({
  options: {
    duration: { type: "string", default: "5m" },
    rate: { type: "string", default: "300" },
    concurrency: { type: "string", default: "96" },
    transfers: { type: "string", default: "2" },
    "transfer-mb": { type: "string", default: "16" },
    "udp-rate": { type: "string", default: "1" },
    "bind-rate": { type: "string", default: "1" },
    "auth-fail-rate": { type: "string", default: "2" },
    "malformed-rate": { type: "string", default: "4" },
    sample: { type: "string", default: "5s" },
    warmup: { type: "string", default: "30s" },
    "max-error-ratio": { type: "string", default: "0.001" },
    out: { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}
const num = (name: keyof typeof flags): number => {
  const v = Number(flags[name]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} must be a number, got ${flags[name]}`);
  return v;
};
const durationMs = parseDuration(flags.duration!);
const sampleMs = parseDuration(flags.sample!);
const warmupSec = parseDuration(flags.warmup!) / 1000;
const rate = num("rate");
const concurrency = num("concurrency");
const HANDSHAKE_MS = 5000;
const user = { user: "soak", password: "soak-password-1" };
const out = flags.out ?? join(tmpdir(), `ferry-soak-${new Date().toISOString().replace(/[:.]/g, "-")}`);
mkdirSync(out, { recursive: true });

/** Honest kinds: a failure of these is an error of the server. */
const HONEST = ["churn", "churn-login", "transfer", "udp", "bind"] as const;
const done: Record<string, number> = {};
const errors: Record<string, number> = {};
let transferBytes = 0;
let datagramsLost = 0;
let datagramsSent = 0;
const count = (kind: string, err?: string): void => {
  done[kind] = (done[kind] ?? 0) + 1;
  if (err) {
    const key = `${kind}: ${err}`;
    errors[key] = (errors[key] ?? 0) + 1;
  }
};
const honestDone = (): number => HONEST.reduce((n, k) => n + (done[k] ?? 0), 0);
const honestErrors = (): number =>
  Object.entries(errors)
    .filter(([k]) => HONEST.some((h) => k.startsWith(`${h}:`)))
    .reduce((n, [, v]) => n + v, 0);

const targets = await startTargets();
const loopback = ["127.0.0.0/8", "::1/128"];
const server = await startProbedFerry({
  config: {
    auth: ["none", "userpass"],
    clients: [{ allow: { from: loopback } }],
    rules: [
      { allow: { commands: ["connect"], to: loopback, ports: [targets.echoPort] } },
      { allow: { commands: ["udp"], to: loopback, ports: [targets.udpEchoPort] } },
      { allow: { commands: ["bind"], to: loopback } },
      { deny: {} },
    ],
    limits: { sessions: 20_000, sessionsPerClient: 20_000, associationsPerClient: 512 },
    timeouts: { handshake: `${HANDSHAKE_MS}ms`, drain: "3s" },
  },
  args: ["--user", `${user.user}:${user.password}`],
  probeMs: sampleMs,
  lifetimeSec: Math.ceil(durationMs / 1000) + 600,
});
const proxy = { port: server.port };
process.stdout.write(
  `soak: ferry pid ${server.pid} on 127.0.0.1:${server.port}; ${flags.duration} at ${rate} sessions/s; output in ${out}\n`,
);

let stopping = false;
const stopNow = (): void => {
  stopping = true;
};
process.on("SIGINT", stopNow);
process.on("SIGTERM", stopNow);
const start = Date.now();
const stopAt = start + durationMs;
const running = (): boolean => !stopping && Date.now() < stopAt && server.alive();

/** Starts `fn` at `perSecond` on average, at most `max` in flight; returns how many are in flight. */
function paced(
  perSecond: number,
  max: number,
  fn: (i: number, done: () => void) => void,
): { inflight: () => number } {
  let started = 0;
  let inflight = 0;
  const tick = setInterval(() => {
    if (!running()) return clearInterval(tick);
    const due = Math.floor(((Date.now() - start) / 1000) * perSecond) - started;
    for (let i = 0; i < due && inflight < max; i++) {
      inflight++;
      fn(started++, () => inflight--);
    }
    // Behind by more than a second's worth: let it go rather than burst later.
    if (due > perSecond) started += due - Math.floor(perSecond);
  }, 10);
  return { inflight: () => inflight };
}

const pools = [
  paced(rate, concurrency, (i, release) => {
    const login = i % 20 === 0 ? user : undefined; // 5 % log in (cheap: an inline user)
    const kind = login ? "churn-login" : "churn";
    churn(proxy, targets.echoPort, login, (err) => {
      release();
      count(kind, err);
    });
  }),
  paced(num("udp-rate"), 16, (_i, release) => {
    association(proxy, targets.udpEchoPort, 20, (err, lost) => {
      release();
      datagramsSent += 20;
      datagramsLost += lost ?? 0;
      count("udp", err);
    });
  }),
  paced(num("bind-rate"), 16, (_i, release) => {
    bind(proxy, (err) => {
      release();
      count("bind", err);
    });
  }),
  paced(num("auth-fail-rate"), 32, (i, release) => {
    authFailure(
      proxy,
      `127.0.0.${10 + (i % 40)}`,
      i % 3 ? user.user : "nobody",
      (err) => {
        release();
        count("auth-failure", err);
      },
      HANDSHAKE_MS + 15_000,
    );
  }),
  paced(num("malformed-rate"), 32, (i, release) => {
    malformed(
      proxy,
      `127.0.0.${2 + (i % 8)}`,
      malformedInput(i),
      (err) => {
        release();
        count("malformed", err);
      },
      HANDSHAKE_MS + 15_000,
    );
  }),
];

/** Random bytes, or a handshake cut short (the server must time it out). */
function malformedInput(i: number): Buffer {
  const cut = [
    Buffer.from([5]),
    Buffer.from([5, 2, 0]),
    Buffer.from([5, 1, 0, 5, 1, 0, 1, 127]),
    Buffer.from([4, 1, 0, 80, 127, 0, 0]),
    Buffer.from([5, 1, 2, 1, 4, 0x73]),
  ];
  if (i % 2 === 0) return cut[(i >> 1) % cut.length]!;
  const noise = Buffer.alloc(1 + ((i * 7919) % 300));
  for (let k = 0; k < noise.length; k++) noise[k] = Math.floor(Math.random() * 256);
  return noise;
}

// A few long transfers at a time, each followed by a short pause.
let transfersInFlight = 0;
const transferBytesEach = num("transfer-mb") * 1_000_000;
const startTransfer = (): void => {
  if (!running()) return;
  transfersInFlight++;
  transfer(proxy, targets.echoPort, transferBytesEach, (err) => {
    transfersInFlight--;
    if (!err) transferBytes += 2 * transferBytesEach;
    count("transfer", err);
    setTimeout(startTransfer, 1000);
  });
};
for (let i = 0; i < num("transfers"); i++) startTransfer();

interface Row extends SoakSample {
  heapTotal: number;
  external: number;
  eldP50: number;
  sessions: number;
  perSecond: number;
  errors: number;
  transferMB: number;
}
const rows: Row[] = [];
let lastDone = 0;
let lastT = 0;
const sampler = setInterval(() => {
  const p: ProbeSample | undefined = server.samples.at(-1);
  if (!p) return;
  const t = (Date.now() - start) / 1000;
  const sessions = Object.values(done).reduce((a, b) => a + b, 0);
  const row: Row = {
    t: Math.round(t),
    rss: p.rss,
    heapUsed: p.heapUsed,
    heapTotal: p.heapTotal,
    external: p.external,
    fds: p.fds,
    eldP50: p.eldP50,
    eldP99: p.eldP99,
    eldMax: p.eldMax,
    sessions,
    perSecond: Math.round((sessions - lastDone) / Math.max(0.001, t - lastT)),
    errors: Object.values(errors).reduce((a, b) => a + b, 0),
    transferMB: Math.round(transferBytes / 1e6),
  };
  lastDone = sessions;
  lastT = t;
  rows.push(row);
  process.stdout.write(
    `t=${row.t}s rss=${fmt("rss", row.rss)} heap=${fmt("heapUsed", row.heapUsed)} fds=${row.fds} eld p99=${row.eldP99} ms sessions=${sessions} (${row.perSecond}/s) errors=${row.errors}\n`,
  );
}, sampleMs);

await new Promise<void>((resolve) => {
  const check = setInterval(() => {
    if (!running()) {
      clearInterval(check);
      resolve();
    }
  }, 200);
});
clearInterval(sampler);
const loadSeconds = (Date.now() - start) / 1000;
const crashed = !server.alive();
// Let what is in flight finish (each is bounded by its own timeout), then stop everything.
const drainDeadline = Date.now() + 40_000;
while (Date.now() < drainDeadline && (pools.some((p) => p.inflight() > 0) || transfersInFlight > 0)) {
  await new Promise((r) => setTimeout(r, 100));
}
const fdsAtRest = server.fds();
const stopped = await server.stop();
await targets.close();

const verdict = judge(rows, warmupSec);
const honest = honestDone();
const honestFailed = honestErrors();
const ratio = honest ? honestFailed / honest : 0;
const maxRatio = num("max-error-ratio");
const refusalErrors = Object.entries(errors).filter(([k]) => /^(auth-failure|malformed):/.test(k));
const failures = [...(verdict.ok ? [] : verdict.lines)];
if (crashed) failures.push(`ferry exited during the run: ${server.ferry.output().slice(-2000)}`);
if (ratio > maxRatio)
  failures.push(
    `honest sessions failed: ${honestFailed} of ${honest} (${(ratio * 100).toFixed(3)} % > ${maxRatio * 100} %)`,
  );
for (const [k, v] of refusalErrors) failures.push(`${v} × ${k}`);
for (const e of server.egress) failures.push(`the server tried to send outside loopback: ${e}`);
const churnDone = (done.churn ?? 0) + (done["churn-login"] ?? 0);

const csvCols = [
  "t",
  "rss",
  "heapUsed",
  "heapTotal",
  "external",
  "fds",
  "eldP50",
  "eldP99",
  "eldMax",
  "sessions",
  "perSecond",
  "errors",
  "transferMB",
] as const;
writeFileSync(
  join(out, "samples.csv"),
  `${[csvCols.join(","), ...rows.map((r) => csvCols.map((c) => r[c]).join(","))].join("\n")}\n`,
);
const MiB = 1024 * 1024;
const md = [
  `# Soak run ${new Date(start).toISOString()}`,
  "",
  `Load for ${loadSeconds.toFixed(0)} s (asked: ${flags.duration}); ferry pid ${server.pid}; ${rows.length} samples every ${sampleMs / 1000} s; warm-up ${warmupSec} s not judged.`,
  "",
  "| what | figure |",
  "| --- | ---: |",
  `| short sessions (CONNECT, 32 bytes echoed, close) | ${churnDone.toLocaleString("en")} (${(churnDone / loadSeconds).toFixed(0)}/s; asked ${rate}/s) |`,
  `| long transfers (sha256-checked) | ${done.transfer ?? 0} (${(transferBytes / 1e6).toLocaleString("en")} MB relayed) |`,
  `| UDP associations | ${done.udp ?? 0} (${datagramsLost} of ${datagramsSent} datagrams lost) |`,
  `| BINDs | ${done.bind ?? 0} |`,
  `| wrong passwords (127.0.0.10-49) | ${done["auth-failure"] ?? 0} |`,
  `| malformed inputs (127.0.0.2-9) | ${done.malformed ?? 0} |`,
  `| honest sessions failed | ${honestFailed} of ${honest} (${(ratio * 100).toFixed(4)} %) |`,
  `| server sessions logged, by outcome | ${[...server.outcomes].map(([k, v]) => `${k} ${v}`).join(", ")} |`,
  `| server fds at start / after the load, at rest | ${server.samples[0]?.fds ?? "?"} / ${fdsAtRest} |`,
  `| server exit | ${stopped.code ?? stopped.signal} |`,
  "",
  "## Flatness (median of the second third of the steady samples against the last third)",
  "",
  "| metric | second third | last third | allowed | max |",
  "| --- | ---: | ---: | ---: | ---: |",
  ...Object.entries(verdict.medians).map(
    ([m, v]) => `| ${m} | ${fmt(m, v.second)} | ${fmt(m, v.last)} | ${fmt(m, v.limit)} | ${fmt(m, v.max)} |`,
  ),
  "",
  ...verdict.lines.map((l) => `- ${l}`),
  "",
  "## Errors by kind",
  "",
  ...(Object.keys(errors).length ? Object.entries(errors).map(([k, v]) => `- ${v} × ${k}`) : ["none"]),
  "",
  "## Samples",
  "",
  "| t (s) | RSS (MiB) | heap used (MiB) | fds | ELD p50 / p99 / max (ms) | sessions | per s | errors |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...rows.map(
    (r) =>
      `| ${r.t} | ${(r.rss / MiB).toFixed(1)} | ${(r.heapUsed / MiB).toFixed(1)} | ${r.fds} | ${r.eldP50} / ${r.eldP99} / ${r.eldMax} | ${r.sessions} | ${r.perSecond} | ${r.errors} |`,
  ),
  "",
  failures.length ? `**FAILED**:\n\n${failures.map((f) => `- ${f}`).join("\n")}` : "**PASSED**",
  "",
].join("\n");
writeFileSync(join(out, "report.md"), md);
process.stdout.write(
  `\n${md.split("## Samples")[0]}${failures.length ? `FAILED:\n${failures.join("\n")}` : "PASSED"}\nreport: ${join(out, "report.md")}\n`,
);
process.exit(failures.length ? 1 : 0);
