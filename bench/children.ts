/**
 * The bench's child processes: every one is tracked by PID and stopped by PID (with the processes
 * it forked, found through /proc), also when the orchestrator fails.
 */
import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import net from "node:net";
import { descendants } from "./proc-tree.js";

const children = new Set<ChildProcess>();
/** Children we stop on purpose: their exit is not reported as unexpected. */
export const stopping = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** SIGKILL to every tracked child and whatever each forked (by PID); used when we fail. */
export function killAll(): void {
  for (const child of children) {
    if (child.pid === undefined || child.exitCode !== null) continue;
    for (const pid of [child.pid, ...descendants(child.pid)]) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
  }
}

/**
 * SIGTERM, then SIGKILL after `graceMs`; then SIGKILL to any process the child forked that is
 * still there (Dante's workers, should one outlive its mother).
 */
export async function stop(child: ChildProcess, graceMs = 3000): Promise<void> {
  stopping.add(child);
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const forked = descendants(child.pid);
  const exited = once(child, "exit");
  process.kill(child.pid, "SIGTERM");
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL");
  }, graceMs);
  await exited;
  clearTimeout(timer);
  for (const pid of forked) {
    try {
      // Still ours only if it was reparented rather than replaced by an unrelated process.
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").length > 0) process.kill(pid, "SIGKILL");
    } catch {}
  }
}

/** Soft and hard "Max open files" of this process. */
export function fdLimits(): { soft: number; hard: number } {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  const [soft, hard] = (line?.match(/(\d+|unlimited)\s+(\d+|unlimited)/)?.slice(1) ?? []).map((v) =>
    v === "unlimited" ? Number.POSITIVE_INFINITY : Number(v),
  );
  return { soft: soft ?? 1024, hard: hard ?? 1024 };
}

/**
 * Spawns `command ARGS` with at least `nofile` descriptors allowed: when our own soft limit is
 * lower, through `sh -c 'ulimit -n N && exec …'` (exec keeps the PID: it is the program itself).
 */
export function spawnWithFiles(
  command: string,
  args: string[],
  nofile: number,
  stdio: StdioOptions,
): ChildProcess {
  const { soft } = fdLimits();
  const child =
    soft >= nofile
      ? spawn(command, args, { stdio })
      : spawn("sh", ["-c", `ulimit -n ${nofile} && exec "$0" "$@"`, command, ...args], { stdio });
  return track(child);
}

/** `node ARGS`; "ipc" shares our stdout/stderr, "pipe-ipc" keeps stderr for error reports. */
export function spawnNode(args: string[], nofile: number, stdio: "ipc" | "pipe-ipc"): ChildProcess {
  const io: StdioOptions =
    stdio === "ipc" ? ["ignore", "inherit", "inherit", "ipc"] : ["ignore", "ignore", "pipe", "ipc"];
  return spawnWithFiles(process.execPath, args, nofile, io);
}

/** Keeps the last 4,000 characters a child wrote to stderr. */
export function stderrTail(child: ChildProcess): () => string {
  let err = "";
  child.stderr?.on("data", (c: Buffer) => {
    err = (err + c.toString()).slice(-4000);
  });
  return () => err;
}

/** The `{ ready: T }` message a Node child sends once it listens. */
export function readyMessage<T>(child: ChildProcess, what: string, timeoutMs = 15_000): Promise<T> {
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

/** A free loopback port (bind 0, close); whoever takes it next is checked by a real session. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}
