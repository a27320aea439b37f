import pino, { type Logger } from "pino";
import pretty from "pino-pretty";
import { escapeControlsInJson } from "./escape.js";

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
}

/** Logs go to stderr: stdout belongs to data (`ferry connect` relays through it). */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? (process.stderr.isTTY ? "pretty" : "json");
  const base = {
    level: options.level ?? "info",
    base: options.fields,
    redact: ["password", "*.password"],
    // Every line, in either format, passes here: pretty parses this JSON too.
    hooks: { streamWrite: escapeControlsInJson },
  };
  if (format === "pretty") {
    return pino(
      base,
      pretty({ destination: 2, sync: true, ignore: "pid,hostname", translateTime: "SYS:HH:MM:ss.l" }),
    );
  }
  return pino(base, pino.destination({ dest: 2, sync: options.sync ?? false }));
}
