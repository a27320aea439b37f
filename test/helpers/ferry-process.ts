import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Daemon, removingOnStop, startDaemon, tempDir } from "./process.js";

/** bin/ferry in this checkout (this file runs from dist/test/helpers/). */
export const FERRY_BIN = fileURLToPath(new URL("../../../bin/ferry", import.meta.url));

/** One JSON line Ferry logged, as pino wrote it. */
export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** The session line Ferry logs when a session ends (src/observe/session-log.ts). */
export interface SessionLine extends LogLine {
  session: number;
  client: string;
  /** The balancer that relayed the connection (PROXY protocol). */
  proxy?: string;
  protocol?: string;
  method?: string;
  user?: string;
  ident?: string;
  command?: string;
  target?: string;
  remote?: string;
  reply?: number;
  outcome: string;
  bytesUp: number;
  bytesDown: number;
  reason?: string;
}

export interface FerryProcess extends Daemon {
  /** socks5h://host:port (no credentials). */
  url: string;
  /** The users given with --user, if any. */
  users: { name: string; password: string }[];
  /** Every JSON log line so far. */
  logs(): LogLine[];
  /** Every session line so far, in the order sessions ended. */
  sessions(): SessionLine[];
  /**
   * The first session line, among those after the first `skip`, that matches `predicate`; waits
   * up to `timeoutMs` for it (a session is logged when it ends, a moment after the client exits).
   */
  waitForSession(
    predicate?: (s: SessionLine) => boolean,
    options?: { skip?: number; timeoutMs?: number },
  ): Promise<SessionLine>;
}

export interface SpawnFerryOptions {
  /** Listen address: 127.0.0.1 (default) or ::1. */
  host?: string;
  /** Each becomes `--user NAME:PASSWORD`. */
  users?: { name: string; password: string }[];
  /** More `ferry serve` arguments (e.g. ["--config", file]). */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  lifetimeSec?: number;
  /** Another ferry executable than this checkout's (an installed package's bin/ferry). */
  bin?: string;
  /** Runs it under `ulimit -n N` (through bash, whose exec keeps the process). */
  fdLimit?: number;
  /**
   * A configuration file made for the chosen listen address ("127.0.0.1:PORT"), given with
   * --config instead of --listen: for listen entries with options (proxyProtocol).
   */
  config?: (listen: string) => Record<string, unknown>;
}

function parseLines(text: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      lines.push(JSON.parse(line) as LogLine);
    } catch {
      // a line still being written
    }
  }
  return lines;
}

/**
 * Runs `bin/ferry serve` as a child process on a free loopback port, with JSON logs on stderr,
 * and waits for its "listening" line. stop() sends SIGTERM; Ferry drains and exits 0.
 */
export async function spawnFerry(options: SpawnFerryOptions = {}): Promise<FerryProcess> {
  const users = options.users ?? [];
  const userArgs = users.flatMap((u) => ["--user", `${u.name}:${u.password}`]);
  const host = options.host ?? "127.0.0.1";
  const hostPart = host.includes(":") ? `[${host}]` : host;
  const dir = options.config ? await tempDir("ferry-config-") : undefined;
  const listenArgs = (port: number): string[] => {
    if (!options.config || !dir) return ["--listen", `${hostPart}:${port}`];
    const file = join(dir.path, `ferry-${port}.json`);
    writeFileSync(file, JSON.stringify(options.config(`${hostPart}:${port}`), null, 2));
    return ["--config", file];
  };
  const daemon = await startDaemon({
    name: "ferry serve",
    command: options.fdLimit === undefined ? process.execPath : "bash",
    host,
    args: (port) => [
      ...(options.fdLimit === undefined
        ? []
        : ["-c", `ulimit -n ${options.fdLimit} && exec "$0" "$@"`, process.execPath]),
      options.bin ?? FERRY_BIN,
      "serve",
      ...listenArgs(port),
      "--log-format",
      "json",
      "--log-level",
      "info",
      ...userArgs,
      ...(options.args ?? []),
    ],
    env: options.env,
    lifetimeSec: options.lifetimeSec,
    // Wait for the log line rather than probing the port: a probe would be logged as a session.
    ready: async (d) => {
      const deadline = Date.now() + 20_000;
      let exited = false;
      void d.exited.then(() => {
        exited = true;
      });
      while (!parseLines(d.output()).some((l) => l.msg?.startsWith("ferry listening on"))) {
        if (exited) throw new Error(`ferry serve exited: ${d.output().trim()}`);
        if (Date.now() > deadline) throw new Error(`ferry serve not listening after 20 s: ${d.output()}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  }).catch(async (err: unknown) => {
    await dir?.remove();
    throw err;
  });
  const logs = (): LogLine[] => parseLines(daemon.output());
  const sessions = (): SessionLine[] => logs().filter((l): l is SessionLine => l.event === "session.end");
  return {
    ...(dir ? removingOnStop(daemon, dir) : daemon),
    url: `socks5h://${hostPart}:${daemon.port}`,
    users,
    logs,
    sessions,
    async waitForSession(predicate = () => true, { skip = 0, timeoutMs = 10_000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = sessions().slice(skip).find(predicate);
        if (found) return found;
        if (Date.now() > deadline) {
          throw new Error(
            `no matching ferry session line within ${timeoutMs} ms; sessions logged: ${JSON.stringify(sessions(), null, 1)}`,
          );
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}
