import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EGRESS_PREFIX, PROBE_PREFIX, type ProbeSample } from "./ferry-probe.js";
import { type FerryProcess, spawnFerry } from "./ferry-process.js";
import { tempDir } from "./process.js";

/** The preload, as built next to this file (dist/test/helpers/ferry-probe.js). */
const PROBE_URL = new URL("./ferry-probe.js", import.meta.url).href;

/** The loopback-only policy every soak and fuzz server runs with. */
export const LOOPBACK_ONLY = {
  clients: [{ allow: { from: ["127.0.0.0/8", "::1/128"] } }],
  rules: [{ allow: { to: ["127.0.0.0/8", "::1/128"] } }, { deny: {} }],
};

export interface ProbedFerry {
  ferry: FerryProcess;
  /** The node process's own pid (ferry runs under `timeout`, whose pid ferry.pid is). */
  pid: number;
  port: number;
  /** Every probe sample so far. */
  samples: ProbeSample[];
  /** Every attempt to send outside loopback that the probe refused (must stay empty). */
  egress: string[];
  /** Session lines by outcome (`ok`, `failed`, ...), counted as they are logged. */
  outcomes: Map<string, number>;
  /** The last error-level log lines (bounded). */
  errors: string[];
  /** Whether the process is still running. */
  alive(): boolean;
  /** Open fds of the server now, read from /proc (-1 if it is gone). */
  fds(): number;
  /** VmRSS of the server now in bytes, from /proc (-1 if it is gone). */
  rss(): number;
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface ProbedFerryOptions {
  /** The configuration file's content (written as JSON, which the YAML loader reads). */
  config: Record<string, unknown>;
  /** More `ferry serve` arguments (`--user`, `--log-level`). */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  probeMs?: number;
  lifetimeSec?: number;
}

/**
 * `bin/ferry serve` as a child, with the probe preloaded (test/helpers/ferry-probe.ts): its
 * samples, its refused egress and its session outcomes are collected line by line as they come,
 * so nothing depends on the bounded output buffer of spawnFerry.
 */
export async function startProbedFerry(options: ProbedFerryOptions): Promise<ProbedFerry> {
  const dir = await tempDir("ferry-probed-");
  const configFile = join(dir.path, "ferry.json");
  writeFileSync(configFile, JSON.stringify(options.config, null, 2));
  const env = options.env ?? process.env;
  let ferry: FerryProcess;
  try {
    ferry = await spawnFerry({
      args: ["--config", configFile, ...(options.args ?? [])],
      env: {
        ...env,
        FERRY_PROBE: "1",
        FERRY_PROBE_MS: String(options.probeMs ?? 1000),
        NODE_OPTIONS: `${env.NODE_OPTIONS ?? ""} --import ${PROBE_URL}`.trim(),
      },
      lifetimeSec: options.lifetimeSec ?? 300,
    });
  } catch (err) {
    await dir.remove();
    throw err;
  }
  const samples: ProbeSample[] = [];
  const egress: string[] = [];
  const outcomes = new Map<string, number>();
  const errors: string[] = [];
  const lines = (onLine: (line: string) => void) => {
    let rest = "";
    return (chunk: Buffer): void => {
      const parts = (rest + chunk.toString("utf8")).split("\n");
      rest = parts.pop() ?? "";
      for (const line of parts) onLine(line);
    };
  };
  ferry.child.stdout!.on(
    "data",
    lines((line) => {
      if (line.startsWith(PROBE_PREFIX)) samples.push(JSON.parse(line.slice(PROBE_PREFIX.length)));
      else if (line.startsWith(EGRESS_PREFIX)) egress.push(line.slice(EGRESS_PREFIX.length));
    }),
  );
  ferry.child.stderr!.on(
    "data",
    lines((line) => {
      if (!line.startsWith("{")) {
        if (line.trim()) errors.push(line.slice(0, 2000));
        return;
      }
      let entry: { level?: number; outcome?: string; session?: number };
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof entry.session === "number" && entry.outcome) {
        outcomes.set(entry.outcome, (outcomes.get(entry.outcome) ?? 0) + 1);
      }
      if ((entry.level ?? 0) >= 50) errors.push(line.slice(0, 2000));
      if (errors.length > 200) errors.splice(0, errors.length - 200);
    }),
  );
  // The first sample is printed at start; the lines so far are in the buffered output already.
  for (const line of ferry.output().split("\n")) {
    if (line.startsWith(PROBE_PREFIX)) samples.push(JSON.parse(line.slice(PROBE_PREFIX.length)));
  }
  const deadline = Date.now() + 20_000;
  while (samples.length === 0) {
    if (Date.now() > deadline) {
      await ferry.stop();
      await dir.remove();
      throw new Error(`no probe sample from ferry within 20 s: ${ferry.output().slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const pid = samples[0]!.pid;
  let exited = false;
  void ferry.exited.then(() => {
    exited = true;
  });
  return {
    ferry,
    pid,
    port: ferry.port,
    samples,
    egress,
    outcomes,
    errors,
    alive: () => !exited,
    fds: () => {
      try {
        return readdirSync(`/proc/${pid}/fd`).length;
      } catch {
        return -1;
      }
    },
    rss: () => {
      try {
        const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
        return m ? Number(m[1]) * 1024 : -1;
      } catch {
        return -1;
      }
    },
    async stop() {
      const result = await ferry.stop(15_000);
      await dir.remove();
      return result;
    },
  };
}
