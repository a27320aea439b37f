import { accessSync, constants, mkdirSync } from "node:fs";
import path from "node:path";
import pino from "pino";
import type { LogFileConfig } from "./log-config.js";

/** Which process writes: alone, or with workers the primary or worker N. */
export type LogProcess = "single" | "primary" | number;

/**
 * The file one process writes. Each process of a `workers: N` server has its own file (the
 * worker's number before the extension: ferry.worker2.log), so no two processes append to the
 * same file or rotate it under each other; the primary keeps the configured name.
 */
export function processLogPath(file: string, who: LogProcess): string {
  if (typeof who !== "number") return file;
  const ext = path.extname(file);
  return `${file.slice(0, file.length - ext.length)}.worker${who}${ext || ".log"}`;
}

/** A folder the file output cannot write to stops the start, rather than losing the audit trail. */
function checkWritable(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
  } catch (err) {
    throw new Error(
      `log.file: cannot write in ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** pino-roll, writing JSON lines: rotated files are NAME[.DATE].N.EXT, `keep` of them besides the current. */
function fileTarget(file: LogFileConfig, who: LogProcess, level: string): pino.TransportTargetOptions {
  return {
    target: "pino-roll",
    level,
    options: {
      file: processLogPath(file.path, who),
      mkdir: true,
      ...(file.rotate === "daily" && { frequency: "daily", dateFormat: "yyyy-MM-dd" }),
      ...(file.size !== undefined && { size: `${file.size}b` }),
      // Counted over the files on disk, so that what earlier runs left is deleted in turn.
      limit: { count: file.keep, removeOtherLogFiles: true },
    },
  };
}

/** What pino.transport returns (a thread-stream), as far as Ferry uses it. */
export type OutputStream = pino.DestinationStream & NodeJS.EventEmitter & { end(): void };

export interface Outputs {
  file?: LogFileConfig;
}

/**
 * The file output: a transport (a worker thread that pino feeds, so that file writes and
 * rotation stay off the event loop), or undefined when none is configured.
 */
export function outputTransport(outputs: Outputs, who: LogProcess, level: string): OutputStream | undefined {
  if (!outputs.file) return undefined;
  checkWritable(path.dirname(outputs.file.path));
  return pino.transport(fileTarget(outputs.file, who, level)) as OutputStream;
}
