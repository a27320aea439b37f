import { z } from "zod";

const byteUnits: Record<string, number> = {
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/** "10MiB", "512KiB", "64k", or a number of bytes; powers of 1024 throughout. */
export function parseLogSize(value: string | number): number {
  const m = typeof value === "number" ? undefined : /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)?\s*$/i.exec(value);
  const n =
    typeof value === "number" ? value : m ? Number(m[1]) * (byteUnits[(m[2] ?? "b").toLowerCase()] ?? 0) : 0;
  if (!(n >= 1024) || !Number.isFinite(n)) {
    throw new Error(`"${value}" is not a log file size; write it like 10MiB or 512KiB (at least 1KiB)`);
  }
  return Math.floor(n);
}

const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseLogSize(v);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
    return z.NEVER;
  }
});

/** `log.file`: JSON lines to a file that pino-roll rotates (src/observe/outputs.ts). */
export const logFileSchema = z.strictObject({
  /** The file; rotated files get a number (and with daily rotation, the date) before the extension. */
  path: z.string().min(1),
  /** daily: a new file each day (and when `size` is reached, if given); size: when `size` is reached. */
  rotate: z.enum(["daily", "size"]).default("daily"),
  /** The size a file may reach (size rotation; optional with daily). */
  size: size.optional(),
  /** Rotated files kept besides the one being written; older ones are deleted. */
  keep: z.number().int().min(1).default(7),
});

export const logSchema = z
  .strictObject({
    level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
    /** On stderr: pretty (one line per session) for people, json for machines; default: pretty on a TTY. */
    format: z.enum(["json", "pretty"]).optional(),
    /** A `session.start` line when each session's request has been read, besides its `session.end`. */
    sessionStart: z.boolean().default(true),
    file: logFileSchema.optional(),
  })
  .refine((l) => l.file?.rotate !== "size" || l.file.size !== undefined, {
    message: "log.file: rotate: size needs a size (e.g. size: 100MiB)",
    path: ["file", "size"],
  })
  .prefault({});

export type LogConfig = z.infer<typeof logSchema>;
export type LogFileConfig = z.infer<typeof logFileSchema>;
