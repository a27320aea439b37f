import { once } from "node:events";
import { hostname } from "node:os";
import pino, { type Logger } from "pino";
import { escapeControlsInJson } from "./escape.js";
import { terminalStream } from "./line-format.js";
import { type LogProcess, type Outputs, outputTransport } from "./outputs.js";

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** pretty for people at a terminal, json for machines; default: pretty on a TTY. */
  format?: "json" | "pretty";
  /** Fields on every line (with workers: which process wrote it). */
  fields?: Record<string, unknown>;
  /**
   * Each line written at once: processes sharing one stderr (workers) must not split a line
   * across writes, or another process's line could land in the middle of it.
   */
  sync?: boolean;
  /** A rotated file besides stderr (`log.file`). */
  outputs?: Outputs;
  /** Which process this is, for the file's name (one file per process). */
  process?: LogProcess;
}

/** How long closeLogger waits for the file output to write what it holds. */
const CLOSE_TIMEOUT_MS = 5000;

const closers = new WeakMap<Logger, () => Promise<void>>();

/** Logs go to stderr: stdout belongs to data (`ferry connect` relays through it). */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? (process.stderr.isTTY ? "pretty" : "json");
  const level = options.level ?? "info";
  const base = {
    level,
    // Which host and process wrote the line, for logs shipped elsewhere.
    base: { pid: process.pid, hostname: hostname(), ...options.fields },
    redact: ["password", "*.password"],
    // Every line, to every output and in either format, passes here first.
    hooks: { streamWrite: escapeControlsInJson },
  };
  const sync = format === "pretty" || (options.sync ?? false);
  const stderr = pino.destination({ dest: 2, sync });
  const color = format === "pretty" && process.stderr.isTTY === true && !process.env.NO_COLOR;
  const console = format === "pretty" ? terminalStream((s) => stderr.write(s), { color }) : stderr;
  const transport = options.outputs
    ? outputTransport(options.outputs, options.process ?? "single", level)
    : undefined;
  if (!transport) {
    const log = pino(base, console);
    return log;
  }
  let failed = false;
  transport.on("error", (err: Error) => {
    // Said once on stderr; the server goes on (stderr still has every line).
    if (failed) return;
    failed = true;
    stderr.write(`ferry: log output failed: ${err.message}\n`);
  });
  const log = pino(
    base,
    pino.multistream([
      { level: "trace", stream: console },
      { level: "trace", stream: transport },
    ]),
  );
  // stderr needs nothing: its writes in flight keep the process alive until they are done, and
  // a flushSync here could put the last lines before the one being written.
  closers.set(log, async () => {
    const closed = once(transport, "close").then(() => undefined);
    transport.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, CLOSE_TIMEOUT_MS)))]);
    clearTimeout(timer);
  });
  return log;
}

/**
 * Writes out what `log` holds and closes its outputs: the file output runs in a worker
 * thread, which the process's exit would otherwise cut off with lines still in it.
 */
export async function closeLogger(log: Logger): Promise<void> {
  await closers.get(log)?.();
}
