/**
 * Resource figures of a process together with every process it forked (Dante runs a tree of
 * mothers and negotiate/request/io children), read from /proc. A single-process proxy is simply a
 * tree of one; threads (microsocks) are already summed in their process's /proc/PID/stat.
 */
import { readdirSync, readFileSync } from "node:fs";

const TICKS = 100; // USER_HZ on Linux

interface Stat {
  ppid: number;
  /** utime + stime + cutime + cstime, in ticks. */
  cpuTicks: number;
  /** minflt + cminflt. */
  minflt: number;
}

/**
 * Fields of /proc/PID/stat after the command name (which may hold spaces): index 0 is field 3
 * (state), so field N is at N - 3. The c* fields add children that exited and were reaped, so a
 * Dante child that ends during a measurement still counts (in its mother's figures).
 */
function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined; // gone meanwhile
  }
  const f = text
    .slice(text.lastIndexOf(")") + 2)
    .split(" ")
    .map(Number);
  return {
    ppid: f[1]!,
    minflt: f[7]! + f[8]!,
    cpuTicks: f[11]! + f[12]! + f[13]! + f[14]!,
  };
}

function allPids(): number[] {
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/** Every live process below `root` (children, grandchildren, …), by walking ppid links. */
export function descendants(root: number): number[] {
  const kids = new Map<number, number[]>();
  for (const pid of allPids()) {
    const s = readStat(pid);
    if (!s) continue;
    const list = kids.get(s.ppid);
    if (list) list.push(pid);
    else kids.set(s.ppid, [pid]);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const k of kids.get(queue.shift()!) ?? []) {
      out.push(k);
      queue.push(k);
    }
  }
  return out;
}

export interface TreeSample {
  /** Processes in the tree, the root included. */
  processes: number;
  /** User + system CPU, ms, of the tree and its reaped children. */
  cpuMs: number;
  /** Minor page faults, likewise. */
  minflt: number;
}

export function sampleTree(root: number): TreeSample {
  let cpuTicks = 0;
  let minflt = 0;
  let processes = 0;
  for (const pid of [root, ...descendants(root)]) {
    const s = readStat(pid);
    if (!s) continue;
    processes++;
    cpuTicks += s.cpuTicks;
    minflt += s.minflt;
  }
  return { processes, cpuMs: (cpuTicks * 1000) / TICKS, minflt };
}

function kib(text: string, key: string): number {
  const m = text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"));
  return m ? Number(m[1]) : 0;
}

export interface TreeMemory {
  processes: number;
  /** Sum of VmRSS: pages shared between the processes count once per process. */
  rssKiB: number;
  /** Sum of Pss: each shared page split between its sharers, so the sum counts it once. */
  pssKiB: number;
}

export function treeMemory(root: number): TreeMemory {
  let rssKiB = 0;
  let pssKiB = 0;
  let processes = 0;
  for (const pid of [root, ...descendants(root)]) {
    try {
      rssKiB += kib(readFileSync(`/proc/${pid}/status`, "utf8"), "VmRSS");
      pssKiB += kib(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"), "Pss");
      processes++;
    } catch {}
  }
  return { processes, rssKiB, pssKiB };
}
