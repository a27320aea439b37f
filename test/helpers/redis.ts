import type { TestContext } from "node:test";
import { type Daemon, freePort, startDaemon, waitForPort } from "./process.js";
import { requireTool } from "./tools.js";

export interface RunningRedis {
  port: number;
  url: string;
  pid: number;
  /** Kills it at once (SIGKILL, by PID): a crash, not a shutdown. */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A redis-server of its own on a free loopback port, nothing saved to disk (`--save ""
 * --appendonly no`), so a restart comes back empty, as a crashed cache would. Skips outside CI
 * (fails under CI) when redis-server is missing; returns undefined then.
 */
export async function startRedis(t: TestContext): Promise<RunningRedis | undefined> {
  if (!requireTool(t, "redis-server", "redis-server")) return undefined;
  const port = await freePort();
  const run = (): Promise<Daemon> =>
    startDaemon({
      name: "redis-server",
      command: "redis-server",
      // The port is fixed (a restart must come back where the clients look): one attempt.
      args: () => ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      ready: (d) => waitForPort(port, { timeoutMs: 15_000, alive: () => d.child.exitCode === null }),
      attempts: 1,
    });
  let daemon = await run();
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    get pid() {
      return daemon.pid;
    },
    async kill() {
      // `timeout` runs redis-server in its process group: the group goes at once.
      process.kill(-daemon.pid, "SIGKILL");
      await daemon.exited;
    },
    async restart() {
      daemon = await run();
    },
    async stop() {
      await daemon.stop(2000);
    },
  };
}
