import cluster from "node:cluster";
import { availableParallelism } from "node:os";
import { runPrimary } from "../cluster/primary.js";
import { workerLink } from "../cluster/worker-link.js";
import { ConfigError, loadConfig } from "../config/load.js";
import type { FileConfig } from "../config/schema.js";
import { createLogger } from "../observe/logger.js";
import { formatAddress } from "../protocol/address.js";
import { startControl } from "../server/control.js";
import { assembleServer } from "../server/embed.js";
import { fdShortfall, fdsNeeded, readFdLimit } from "../server/fd-budget.js";
import type { Reloader } from "../server/reload.js";
import { type FerryServer, ListenError } from "../server/server.js";
import { ServerState } from "../server/state.js";
import { gssapiStatus } from "./doctor.js";
import { EXIT_GRACE_MS, stopper } from "./stop-signals.js";

export interface ServeFlags {
  config?: string;
  listen?: string[];
  user?: string[];
  users?: string;
  auth?: string[];
  allowOpenProxy?: boolean;
  /** false with --no-http; commander sets true otherwise, which leaves the file's value. */
  http?: boolean;
  logLevel?: string;
  logFormat?: "json" | "pretty";
  control?: string;
  workers?: string;
}

function parseInlineUser(spec: string): { name: string; password: string } {
  const colon = spec.indexOf(":");
  if (colon <= 0 || colon === spec.length - 1) {
    throw new ConfigError(
      `--user expects NAME:PASSWORD, got "${spec.slice(0, Math.max(colon, 0)) || spec.split(":")[0]}:…"`,
    );
  }
  return { name: spec.slice(0, colon), password: spec.slice(colon + 1) };
}

/** `workers: auto` is one per core the process may use. */
export const workerCount = (workers: number | "auto"): number =>
  workers === "auto" ? availableParallelism() : workers;

/**
 * `ferry serve`. With one worker (the default) this process is the server. With more, it is the
 * primary (src/cluster/primary.ts): it starts the workers, which run this same function as
 * cluster workers (`link` set) and share the listen addresses and the limits.
 */
export async function serve(flags: ServeFlags): Promise<number> {
  const link = cluster.isWorker ? workerLink() : undefined;
  let log = createLogger({ level: flags.logLevel, format: flags.logFormat, sync: link !== undefined });
  let server: FerryServer;
  let drainMs: number;
  let reloader: Reloader;
  let control: { close(): Promise<void> } | undefined;
  try {
    const overrides: Partial<FileConfig> = {
      listen: flags.listen?.length ? flags.listen : undefined,
      users: flags.users,
      auth: flags.auth?.length ? (flags.auth.flatMap((a) => a.split(",")) as FileConfig["auth"]) : undefined,
      allowOpenProxy: flags.allowOpenProxy || undefined,
      http: flags.http === false ? false : undefined,
      workers:
        flags.workers === undefined
          ? undefined
          : /^\d+$/.test(flags.workers)
            ? Number(flags.workers)
            : (flags.workers as "auto"),
    };
    const inlineUsers = (flags.user ?? []).map(parseInlineUser);
    // The same sources are read again on every reload.
    const load = () => loadConfig({ file: flags.config, overrides, inlineUsers });
    const config = await load();
    const workers = link?.count ?? workerCount(config.workers);
    if (flags.logLevel === undefined || flags.logFormat === undefined || workers > 1) {
      log = createLogger({
        level: flags.logLevel ?? config.log.level,
        format: flags.logFormat ?? config.log.format,
        // Processes sharing stderr: each line says whose it is, and is written whole.
        ...(workers > 1 && { fields: { worker: link?.index ?? "primary", pid: process.pid }, sync: true }),
      });
    }
    if (!link && workers > 1) {
      return await runPrimary({
        load,
        config,
        log,
        workers,
        control: flags.control ?? config.control,
      });
    }
    const state = new ServerState(link?.store, workers);
    if (link) {
      state.generation = link.generation;
      state.limits.adopt(config, link.generation);
    }
    drainMs = config.timeouts.drain;
    const assembled = await assembleServer(config, state, load, log);
    ({ server, reloader } = assembled);
    const listening = await server.listen();
    if (link) {
      // The primary says when every worker listens, and runs the control socket.
      link.ready(listening);
      return await run();
    }
    const where = listening.map((b) => formatAddress(b));
    // One line when the limits cannot all be met; after listening, so a failure to start stays
    // the one line it is.
    const fdWarning = fdShortfall(config);
    if (fdWarning) log.warn({ fdLimit: readFdLimit(), fdsNeeded: fdsNeeded(config) }, fdWarning);
    log.info(
      { listen: where, auth: assembled.context.methods.map((m) => m.name) },
      `ferry listening on ${where.join(", ")}`,
    );
    const gssapi = gssapiStatus();
    log.info({ gssapi: gssapi.available }, gssapi.line);
    const controlPath = flags.control ?? config.control;
    if (controlPath) {
      try {
        control = await startControl(controlPath, { reload: () => reloadNow("ferry reload") });
      } catch (err) {
        await server.close(0);
        throw new ListenError((err as Error).message);
      }
      log.info(
        `control socket ${controlPath}: \`ferry reload --control ${controlPath}\` reloads the configuration`,
      );
    }
  } catch (err) {
    if (err instanceof ConfigError || err instanceof ListenError) {
      if (link) link.failed(err.message);
      else process.stderr.write(`ferry: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  return await run();

  async function reloadNow(why: string) {
    log.info(`${why}: reloading the configuration`);
    const result = await reloader.reload();
    if (result.ok) log.info({ opened: result.opened, closed: result.closed }, result.message);
    else log.error(result.message);
    return result;
  }

  /** Serves until stopped; resolves with the exit status. */
  function run(): Promise<number> {
    return new Promise<number>((resolve) => {
      const { stop } = stopper(log, drainMs, EXIT_GRACE_MS, {
        drain: (signal) => {
          log.info(
            { sessions: server.activeSessions },
            `${signal}: no longer accepting; draining live sessions`,
          );
          process.off("SIGHUP", onHup);
          void control?.close();
          void server.close(drainMs).then(() => {
            log.info("stopped");
            log.flush?.();
            // A worker's channel to the primary would keep it alive.
            link?.close();
            resolve(0);
          });
        },
        cut: () => void server.close(0),
        overdue: () =>
          log.error(
            { sessions: server.activeSessions },
            `still running ${EXIT_GRACE_MS} ms after the sessions were cut: exiting anyway`,
          ),
      });
      // A worker reloads when its primary says, with the generation every worker uses.
      const onHup = link ? (): void => {} : (): void => void reloadNow("SIGHUP");
      process.on("SIGHUP", onHup);
      process.on("SIGINT", () => stop("SIGINT"));
      process.on("SIGTERM", () => stop("SIGTERM"));
      link?.serve({
        reload: (generation) => reloader.reload(generation),
        stop: (now) => {
          // A second stop from the primary cuts at once, whether or not a drain had begun.
          stop(now ? "second stop from the primary" : "stop from the primary", now);
        },
      });
    });
  }
}
