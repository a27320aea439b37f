import { readFileSync } from "node:fs";

/**
 * The one child of `pid`: the program a `timeout` wrapper (test/helpers/process.ts) runs, which
 * is what to signal or measure (a signal to `timeout` itself is passed on, and arms its SIGKILL).
 */
export function childPid(pid: number): number {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/);
  const child = Number(children[0]);
  if (!Number.isInteger(child) || child <= 0) throw new Error(`process ${pid} has no child`);
  return child;
}

/** Resident memory of a process in bytes (VmRSS of /proc/PID/status). */
export function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!kb) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kb[1]) * 1024;
}
