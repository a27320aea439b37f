/**
 * How the soak decides "flat": pure functions over the samples, so the rule is tested on its own
 * (test/unit/soak-judge.test.ts) and written down once (docs/reliability.md).
 */

export interface SoakSample {
  /** Seconds since the load started. */
  t: number;
  rss: number;
  heapUsed: number;
  fds: number;
  /** Event-loop delay p99 over the sample's interval, ms. */
  eldP99: number;
  eldMax: number;
}

export interface Bound {
  metric: "rss" | "heapUsed" | "fds" | "eldP99";
  /** The last third's median may exceed the second third's by this much (bytes, fds or ms) ... */
  slack: number;
  /** ... or by this fraction of the second third's median, whichever is more. */
  relative: number;
  /** No sample after the warm-up may exceed this at all. */
  ceiling: number;
}

const MiB = 1024 * 1024;

/**
 * Sized for the hour-long run: there the two thirds' medians are 20 minutes apart, so at 300
 * sessions/s 16 MiB of RSS is ~45 bytes per session and 8 MiB of heap ~23 bytes per session kept
 * for good; a short run's noise (GC's sawtooth, a burst of sockets at sampling time) stays under.
 */
export const BOUNDS: readonly Bound[] = [
  { metric: "rss", slack: 16 * MiB, relative: 0.05, ceiling: 1024 * MiB },
  { metric: "heapUsed", slack: 8 * MiB, relative: 0.1, ceiling: 512 * MiB },
  { metric: "fds", slack: 16, relative: 0.1, ceiling: 15_000 },
  { metric: "eldP99", slack: 20, relative: 0.5, ceiling: 2000 },
];

export interface Verdict {
  ok: boolean;
  lines: string[];
  /** Per metric: medians of the second and last thirds. */
  medians: Record<string, { second: number; last: number; limit: number; max: number }>;
}

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Drops the warm-up (the first `warmupSec`, at least a tenth of the run), splits the rest in
 * thirds, and holds the median of the last third to the second third's median plus `slack` (or
 * `relative` of it, if more); every sample after the warm-up must stay under the `ceiling`. The first third is
 * not compared: caches, pools and the JIT are still settling there.
 */
export function judge(samples: SoakSample[], warmupSec: number, bounds: readonly Bound[] = BOUNDS): Verdict {
  const lines: string[] = [];
  const medians: Verdict["medians"] = {};
  const end = samples.at(-1)?.t ?? 0;
  const steady = samples.filter((s) => s.t >= Math.max(warmupSec, end / 10));
  if (steady.length < 6) {
    return {
      ok: false,
      lines: [`too few samples after the warm-up to judge (${steady.length}; need 6)`],
      medians,
    };
  }
  const third = Math.floor(steady.length / 3);
  const second = steady.slice(third, 2 * third);
  const last = steady.slice(steady.length - third);
  let ok = true;
  for (const b of bounds) {
    const m2 = median(second.map((s) => s[b.metric]));
    const m3 = median(last.map((s) => s[b.metric]));
    const limit = m2 + Math.max(b.slack, m2 * b.relative);
    const max = Math.max(...steady.map((s) => s[b.metric]));
    medians[b.metric] = { second: m2, last: m3, limit, max };
    if (m3 > limit) {
      ok = false;
      lines.push(
        `${b.metric} grew: median ${fmt(b.metric, m3)} in the last third > ${fmt(b.metric, limit)} allowed (second third ${fmt(b.metric, m2)})`,
      );
    }
    if (max > b.ceiling) {
      ok = false;
      lines.push(
        `${b.metric} reached ${fmt(b.metric, max)}, over the ceiling of ${fmt(b.metric, b.ceiling)}`,
      );
    }
  }
  if (ok) lines.push("flat: no metric grew beyond its bound, none reached its ceiling");
  return { ok, lines, medians };
}

export function fmt(metric: string, v: number): string {
  if (metric === "rss" || metric === "heapUsed") return `${(v / MiB).toFixed(1)} MiB`;
  if (metric === "eldP99") return `${v.toFixed(1)} ms`;
  return String(Math.round(v));
}
