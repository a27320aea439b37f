/**
 * Messages between the bench orchestrator (run.ts) and its child processes, plus small helpers
 * they share. Every child talks over the Node IPC channel of `fork`/`spawn`.
 */

/** How the load generator reaches a target: straight, or through a SOCKS5 proxy on this port. */
export type Via = { kind: "direct" } | { kind: "socks5"; port: number };

export type LoadRequest =
  | { op: "upload"; via: Via; port: number; seconds: number }
  | { op: "download"; via: Via; port: number; seconds: number }
  | { op: "sessions"; via: Via; port: number; count: number; concurrency: number; timeoutMs: number }
  | { op: "hold"; via: Via; port: number; count: number; concurrency: number; timeoutMs: number }
  | { op: "release" }
  | { op: "exit" };

export interface LoadCpu {
  /** CPU the load generator used during the operation, in ms (user + system). */
  cpuMs: number;
  wallMs: number;
}

export interface ThroughputResult extends LoadCpu {
  bytes: number;
  seconds: number;
}

export interface SessionsResult extends LoadCpu {
  ok: number;
  errors: number;
  firstError?: string;
  /** Latency of every completed session, ms. */
  latencies: number[];
}

export interface HoldResult extends LoadCpu {
  open: number;
  errors: number;
  firstError?: string;
}

export type LoadReply =
  | { id: number; ok: true; result: ThroughputResult | SessionsResult | HoldResult | null }
  | { id: number; ok: false; error: string };

export interface TargetPorts {
  /** Echoes every byte; half-close honoured. */
  echo: number;
  /**
   * Discards input; answers the byte count as 8 bytes (big-endian) and closes once the upload's
   * last 64 KiB record (first byte "E") is in, or on the client's FIN.
   */
  sink: number;
  /** Sends data as fast as the reader takes it until the connection closes. */
  source: number;
}

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

/** A wrong option or a missing tool: reported as one line, without a stack. */
export class UsageError extends Error {}
