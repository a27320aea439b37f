import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A free TCP port on `host`, found by binding port 0 and closing. Another process may take it
 * before the caller binds it, so daemons started on it are retried (see startDaemon).
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const server = net.createServer();
  server.listen(0, host);
  await once(server, "listening");
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Resolves once something accepts TCP connections on host:port; rejects after `timeoutMs`. */
export async function waitForPort(
  port: number,
  options: { host?: string; timeoutMs?: number; alive?: () => boolean } = {},
): Promise<void> {
  const { host = "127.0.0.1", timeoutMs = 5000, alive = () => true } = options;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`the process meant to listen on ${host}:${port} has exited`);
    if (Date.now() > deadline) throw new Error(`nothing accepted on ${host}:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A temporary directory, removed by the returned `remove()`. */
export async function tempDir(
  prefix = "ferry-test-",
): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** stdout, up to `maxBuffer` bytes (see stdoutBytes / stdoutSha256 for all of it). */
  stdout: Buffer;
  stdoutBytes: number;
  stdoutSha256: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  input?: Buffer | string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Killed with SIGKILL after this long; the result says timedOut. */
  timeoutMs?: number;
  /** stdout kept in memory; beyond it only the byte count and hash are kept. */
  maxBuffer?: number;
}

/**
 * Runs a program to completion with a hard time limit, feeding `input` to stdin (then EOF).
 * stdout is hashed as it streams, so large transfers can be checked without holding them.
 */
export async function run(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const { timeoutMs = 90_000, maxBuffer = 16 * 1024 * 1024 } = options;
  const child = spawn(command, args, {
    env: options.env ?? process.env,
    cwd: options.cwd,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const hash = createHash("sha256");
  const chunks: Buffer[] = [];
  let kept = 0;
  let total = 0;
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => {
    hash.update(c);
    total += c.length;
    if (kept < maxBuffer) {
      chunks.push(c);
      kept += c.length;
    }
  });
  child.stderr!.on("data", (c: Buffer) => {
    if (stderr.length < 1_000_000) stderr += c.toString("utf8");
  });
  child.stdin!.on("error", () => {}); // the program may exit without reading its input
  child.stdin!.end(options.input ?? "");
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c, s) => resolve([c, s]));
  }).finally(() => clearTimeout(timer));
  return {
    code,
    signal,
    stdout: Buffer.concat(chunks),
    stdoutBytes: total,
    stdoutSha256: hash.digest("hex"),
    stderr,
    timedOut,
  };
}

/** A short description of a finished run, for assertion messages. */
export function describeRun(r: RunResult): string {
  const how = r.timedOut ? "timed out" : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  return `${how}; stderr: ${r.stderr.trim().slice(-2000) || "(empty)"}`;
}

export interface Daemon {
  pid: number;
  host: string;
  port: number;
  child: ChildProcess;
  /** Everything the daemon wrote to stdout and stderr so far (bounded). */
  output(): string;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with how it exited. Safe to call twice. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `daemon` with a stop() that also removes `dir` (the folder of its configuration) once it has exited. */
export function removingOnStop<D extends Daemon>(daemon: D, dir: { remove(): Promise<void> }): D {
  const stop = daemon.stop;
  return {
    ...daemon,
    async stop(graceMs?: number) {
      const result = await stop(graceMs);
      await dir.remove();
      return result;
    },
  };
}

export interface DaemonOptions {
  command: string;
  /** Arguments given the port chosen for this attempt. */
  args: (port: number) => string[];
  host?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Hard cap on the daemon's life, enforced by coreutils `timeout` even if this process dies. */
  lifetimeSec?: number;
  /** How long to wait for it to accept connections. */
  readyTimeoutMs?: number;
  /** Custom readiness (default: the port accepts a TCP connection). */
  ready?: (daemon: Daemon) => Promise<void>;
  /** Attempts with a fresh port when the daemon exits before it is ready (the port was taken). */
  attempts?: number;
  name?: string;
}

/**
 * Starts a long-running third-party program on a free loopback port and waits until it is
 * ready. It runs under `timeout` (a hard lifetime), in its own process group, so stop() can end
 * it and every child it forked without touching anything else.
 */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const { attempts = 3, host = "127.0.0.1" } = options;
  let lastError: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = await freePort(host);
    const daemon = spawnDaemon(options, host, port);
    try {
      if (options.ready) await options.ready(daemon);
      else {
        let alive = true;
        void daemon.exited.then(() => {
          alive = false;
        });
        await waitForPort(port, { host, timeoutMs: options.readyTimeoutMs ?? 15_000, alive: () => alive });
      }
      return daemon;
    } catch (err) {
      lastError = err;
      await daemon.stop(500);
    }
  }
  const name = options.name ?? options.command;
  throw new Error(`${name} did not start after ${attempts} attempts: ${(lastError as Error).message}`);
}

function spawnDaemon(options: DaemonOptions, host: string, port: number): Daemon {
  const lifetime = String(options.lifetimeSec ?? 300);
  // `timeout` makes itself a process-group leader and signals the whole group on expiry or on
  // the SIGTERM we send it, so forked children (danted's) go too. Its --kill-after clock starts
  // at the first signal it passes on, so it must outlast a whole drain test on a loaded machine
  // (5 s did not: ferry was SIGKILLed just after logging "stopped"); stop() kills sooner itself.
  const child = spawn("timeout", ["--kill-after=30", lifetime, options.command, ...options.args(port)], {
    env: options.env ?? process.env,
    cwd: options.cwd,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  const collect = (c: Buffer): void => {
    if (output.length < 2_000_000) output += c.toString("utf8");
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("error", (err) => {
      output += `\nspawn error: ${err.message}`;
      resolve({ code: null, signal: null });
    });
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  // Do not keep the test runner alive for a daemon someone forgot to stop; `timeout` bounds it.
  child.unref();
  (child.stdout as unknown as { unref?: () => void }).unref?.();
  (child.stderr as unknown as { unref?: () => void }).unref?.();
  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  return {
    pid: child.pid ?? -1,
    host,
    port,
    child,
    output: () => output,
    exited,
    stop(graceMs = 3000) {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null && child.pid) {
          try {
            process.kill(child.pid, "SIGTERM");
          } catch {}
          const timer = setTimeout(() => {
            try {
              process.kill(-child.pid!, "SIGKILL"); // the group we created with detached: true
            } catch {}
          }, graceMs);
          const result = await exited;
          clearTimeout(timer);
          return result;
        }
        return exited;
      })();
      return stopping;
    },
  };
}
