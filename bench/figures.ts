/** What the bench records per system: one entry per repetition; the table shows medians. */

export const SYSTEMS = ["direct", "minimal", "microsocks", "dante", "ferry"] as const;
export type System = (typeof SYSTEMS)[number];

export interface Figures {
  uploadMBps: number[];
  downloadMBps: number[];
  /** Proxy CPU (its whole process tree) per 10^9 bytes over both stream runs, s. */
  cpuSecPerGB: number[];
  /** Proxy minor page faults (whole tree) per 10^9 bytes over both stream runs. */
  minfltPerGB: number[];
  sessionsPerSec: number[];
  p50ms: number[];
  p99ms: number[];
  /** Proxy CPU (whole tree) per 1,000 completed sessions, ms. */
  cpuMsPer1kSessions: number[];
  /** Processes in the proxy's tree after the sessions run. */
  processes: number[];
  /** Load generator CPU ÷ wall time during the sessions run and the stream runs. */
  loaderBusySessions: number[];
  loaderBusyStreams: number[];
  /** Growth of summed VmRSS / Pss of the proxy's tree per idle connection, KiB. */
  idleRssKiB: number[];
  idlePssKiB: number[];
  idleHeld: number[];
  idleProcesses: number[];
}

export function blankFigures(): Figures {
  return {
    uploadMBps: [],
    downloadMBps: [],
    cpuSecPerGB: [],
    minfltPerGB: [],
    sessionsPerSec: [],
    p50ms: [],
    p99ms: [],
    cpuMsPer1kSessions: [],
    processes: [],
    loaderBusySessions: [],
    loaderBusyStreams: [],
    idleRssKiB: [],
    idlePssKiB: [],
    idleHeld: [],
    idleProcesses: [],
  };
}

/** One measurement as taken, for --json: everything the medians were computed from. */
export interface RawRecord {
  run: number;
  system: System;
  op: "upload" | "download" | "sessions" | "idle";
  [key: string]: number | string | undefined;
}
