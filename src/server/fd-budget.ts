import { readdirSync, readFileSync } from "node:fs";
import type { Config } from "../config/schema.js";

/** Descriptors the process needs besides its connections: modules, logs, DNS, a reload's reads. */
const PROCESS_MARGIN = 64;

/**
 * The soft limit on open files (RLIMIT_NOFILE), from /proc/self/limits: Node has no getrlimit.
 * Undefined where that file does not exist (not Linux) or says "unlimited".
 */
export function readFdLimit(path = "/proc/self/limits"): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  const m = /^Max open files\s+(\d+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** How many descriptors are open now (Linux); undefined elsewhere. */
export function countOpenFds(): number | undefined {
  try {
    // Less the one readdir itself holds open.
    return readdirSync("/proc/self/fd").length - 1;
  } catch {
    return undefined;
  }
}

/**
 * Descriptors the configured limits can take at once: two per session (client and target),
 * one per handshake, one per listener, and the process's own.
 */
export function fdsNeeded(config: Config): number {
  const { sessions, handshakes } = config.limits;
  return 2 * sessions + handshakes + config.listen.length + PROCESS_MARGIN;
}

/** One line for the log when the open-files limit is below what the limits need, else undefined. */
export function fdShortfall(config: Config, limit = readFdLimit()): string | undefined {
  const needed = fdsNeeded(config);
  if (limit === undefined || limit >= needed) return undefined;
  const { sessions, handshakes } = config.limits;
  return (
    `the open-files limit is ${limit}, below the ${needed} that limits.sessions (${sessions}, 2 each) and ` +
    `limits.handshakes (${handshakes}) can take: connections beyond what fits will be closed at accept. ` +
    `Raise it (\`ulimit -n ${needed}\` before starting ferry, or LimitNOFILE=${needed} in its systemd unit) ` +
    "or lower limits.sessions"
  );
}

/**
 * How many client connections fit in the open-files limit, so that accepting one more never
 * leaves a session without a descriptor for its target. Each connection is counted at two (a
 * handshake takes one, a relayed session two); a reserve of 16 plus 1% of the limit is kept for
 * the process itself and for the odd session that takes a third (BIND, UDP). Measured once,
 * when the server starts listening; `Infinity` where the limit cannot be read.
 */
export function connectionCapacity(limit = readFdLimit(), open = countOpenFds()): number {
  if (limit === undefined || open === undefined) return Number.POSITIVE_INFINITY;
  const reserve = 16 + Math.ceil(limit / 100);
  return Math.max(1, Math.floor((limit - open - reserve) / 2));
}
