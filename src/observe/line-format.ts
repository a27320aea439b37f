import { escapeControls } from "./escape.js";

/**
 * The terminal format (`log.format: pretty`): one line per event, a session's end reading like
 *
 *   12:03:04 127.0.0.1:51234 → example.com:443 alice connect ok ↑1.2 KiB ↓53 KiB 1.3s
 *
 * the way people tail Dante or nginx. Machines read the JSON format; this one is for a person,
 * so fields a line does not show are left out (the JSON line has them all).
 */

type Rec = Record<string, unknown>;

export interface LineFormatOptions {
  /** ANSI colours for warnings, errors and failed sessions. */
  color?: boolean;
}

const LEVELS: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
const COLORS: Record<number, string> = { 40: "\x1b[33m", 50: "\x1b[31m", 60: "\x1b[31m" };
const RED = "\x1b[31m";
const DIM = "\x1b[2m";
const RESET = "\x1b[0m";

/** A field as text a terminal shows as it is (control characters made visible). */
function text(v: unknown, absent = "-"): string {
  if (v === undefined || v === null || v === "") return absent;
  return escapeControls(String(v));
}

const two = (n: number): string => String(n).padStart(2, "0");

function clock(time: unknown): string {
  const d = new Date(typeof time === "number" ? time : Date.now());
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** 0 B, 812 B, 1.2 KiB, 53 KiB, 4.0 MiB. */
export function formatBytes(n: unknown): string {
  const b = typeof n === "number" && Number.isFinite(n) ? n : 0;
  if (b < 1024) return `${b} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = b / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** 340ms, 1.3s, 42s, 2m05s, 1h02m. */
export function formatDuration(ms: unknown): string {
  const t = typeof ms === "number" && Number.isFinite(ms) ? ms : 0;
  if (t < 1000) return `${Math.round(t)}ms`;
  if (t < 10_000) return `${(t / 1000).toFixed(1)}s`;
  const s = Math.round(t / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
}

/** client → target user[(protection)] command: the part both session lines start with. */
function who(r: Rec): string {
  // A SOCKS4 USERID is the client's claim, not a login: marked as such.
  const user = r.user === undefined && r.ident !== undefined ? `ident:${text(r.ident)}` : text(r.user);
  const level = r.protection === undefined ? "" : `(${text(r.protection)})`;
  return `${text(r.client)} → ${text(r.target)} ${user}${level} ${text(r.command)}`;
}

function sessionEnd(r: Rec, color: boolean): string {
  const ok = r.reply === 0 || r.reply === 90;
  const reason = r.reason === undefined ? "" : ` (${text(r.reason)})`;
  let outcome = ok ? "ok" : `failed: ${text(r.outcome, "no reply")}${reason}`;
  if (ok && r.reason !== undefined) outcome += reason;
  if (!ok && color) outcome = `${RED}${outcome}${RESET}`;
  const parts = [who(r), outcome];
  if (r.peer !== undefined) parts.push(`peer ${text(r.peer)}`);
  if (typeof r.peersRefused === "number" && r.peersRefused > 0) parts.push(`${r.peersRefused} peers refused`);
  const up = `↑${formatBytes(r.bytesUp)}`;
  const down = `↓${formatBytes(r.bytesDown)}`;
  if (r.command === "udp") {
    parts.push(`${up} in ${num(r.datagramsUp)} dg`, `${down} in ${num(r.datagramsDown)} dg`);
    const dropped = r.datagramsDropped;
    if (dropped && typeof dropped === "object") {
      const counts = Object.entries(dropped as Record<string, unknown>).map(
        ([k, v]) => `${text(k)} ${num(v)}`,
      );
      if (counts.length) parts.push(`dropped ${counts.join(", ")}`);
    }
  } else parts.push(up, down);
  parts.push(formatDuration(r.durationMs));
  return parts.join(" ");
}

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);

/** The text of one record, without its line break. */
function body(r: Rec, color: boolean): string {
  switch (r.event) {
    case "session.end":
      return sessionEnd(r, color);
    case "session.start":
      return `${who(r)} open`;
    case "connection.refused":
      return `${text(r.client)}:${text(r.clientPort)} refused: ${text(r.reason)}`;
    default:
      return text(r.msg, String(r.event ?? ""));
  }
}

/** One log record (a parsed JSON line) as one terminal line, ending in a line break. */
export function formatLine(r: Rec, options: LineFormatOptions = {}): string {
  const color = options.color === true;
  const level = typeof r.level === "number" ? r.level : 30;
  const label = LEVELS[level] ?? String(level);
  let head = clock(r.time);
  // With workers, which process wrote it.
  if (r.worker !== undefined) head += ` [${r.worker === "primary" ? "primary" : `w${text(r.worker)}`}]`;
  if (color) head = `${DIM}${head}${RESET}`;
  if (label) head += ` ${color && COLORS[level] ? `${COLORS[level]}${label}${RESET}` : label}`;
  return `${head} ${body(r, color)}\n`;
}

/**
 * A pino destination that passes each line, in the terminal format, to `write` (one call per
 * line, as the JSON format's lines are written). A line that is not JSON is passed as it is.
 */
export function terminalStream(
  write: (s: string) => void,
  options: LineFormatOptions = {},
): { write(line: string): void } {
  return {
    write(line: string): void {
      let out: string;
      try {
        out = formatLine(JSON.parse(line) as Rec, options);
      } catch {
        out = line;
      }
      write(out);
    },
  };
}
