/** Parses "250ms", "10s", "5m", "2h" (or a bare number of milliseconds) into milliseconds. */
export function parseDuration(value: string | number): number {
  if (typeof value === "number") return value;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!m) throw new Error(`"${value}" is not a duration; write it like 500ms, 10s, 5m or 1h`);
  const n = Number(m[1]);
  const unit = m[2] ?? "ms";
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!);
}

export interface HostPort {
  host: string;
  port: number;
}

/** "127.0.0.1:1080", "[::1]:1080", "0.0.0.0:1080", "[::]:1080", "localhost:1080". */
export function parseHostPort(value: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new Error(`"${value}" is not HOST:PORT; write it like 127.0.0.1:1080 or [::1]:1080`);
  }
  return { host: (m[1] ?? m[2])!, port };
}

const byteUnits: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tb: 1e12,
  tib: 1024 ** 4,
  kbit: 1e3 / 8,
  mbit: 1e6 / 8,
  gbit: 1e9 / 8,
};

/**
 * Parses a rate into bytes per second: "10MiB/s", "512 KiB/s", "1MB/s", "100Mbit/s", or a bare
 * number of bytes per second. Units are case-insensitive; KiB/MiB/GiB are powers of 1024.
 */
export function parseRate(value: string | number): number {
  if (typeof value === "number") {
    if (!(value > 0) || !Number.isFinite(value)) throw new Error(`a rate must be positive, got ${value}`);
    return value;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)?\s*(?:\/\s*s)?\s*$/i.exec(value);
  const factor = m ? byteUnits[(m[2] ?? "b").toLowerCase()] : undefined;
  const n = m ? Number(m[1]) * (factor ?? 0) : 0;
  if (!m || factor === undefined || !(n >= 1)) {
    throw new Error(
      `"${value}" is not a rate; write it like 10MiB/s, 512KiB/s, 1MB/s or 100Mbit/s (at least 1 byte/s)`,
    );
  }
  return Math.floor(n);
}

/** A rate for people: 10485760 → "10MiB/s". */
export function formatRate(bytesPerSecond: number): string {
  for (const [unit, f] of [
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ] as const) {
    if (bytesPerSecond >= f) return `${+(bytesPerSecond / f).toFixed(2)}${unit}/s`;
  }
  return `${bytesPerSecond}B/s`;
}

/** A transfer quota: `bytes` in each calendar `period` (UTC). */
export interface QuotaSize {
  bytes: number;
  period: "day" | "month";
}

/**
 * Parses a quota: "10GiB/day", "500 GiB / month", "1MiB/day". The size takes the units of a
 * rate (KiB/MiB/GiB/TiB are powers of 1024; KB/MB/GB/TB of 1000), the period is day or month.
 */
export function parseQuota(value: string): QuotaSize {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)?\s*\/\s*(day|month)\s*$/i.exec(value);
  const unit = m ? (m[2] ?? "b").toLowerCase() : "";
  const factor = unit.endsWith("bit") ? undefined : byteUnits[unit];
  const bytes = m && factor !== undefined ? Math.floor(Number(m[1]) * factor) : 0;
  if (!m || !(bytes >= 1)) {
    throw new Error(`"${value}" is not a quota; write it like 10GiB/day or 500GiB/month (at least 1 byte)`);
  }
  return { bytes, period: m[3]!.toLowerCase() as "day" | "month" };
}

/** A size for people: 1572864 → "1.5MiB". */
export function formatBytes(bytes: number): string {
  for (const [unit, f] of [
    ["TiB", 1024 ** 4],
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ] as const) {
    if (bytes >= f) return `${+(bytes / f).toFixed(2)}${unit}`;
  }
  return `${bytes}B`;
}

export interface PortRange {
  low: number;
  high: number;
}

/** "40000-40999" (or one port, "40000") into an inclusive range of non-zero ports. */
export function parsePortRange(value: string): PortRange {
  const m = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(value);
  const low = m ? Number(m[1]) : Number.NaN;
  const high = m ? Number(m[2] ?? m[1]) : Number.NaN;
  if (!m || low < 1 || high > 65535 || low > high) {
    throw new Error(
      `"${value}" is not a port range; write it like 40000-40999 (ports 1 to 65535, low first)`,
    );
  }
  return { low, high };
}
