import cluster from "node:cluster";
import { availableParallelism } from "node:os";
import { runPrimary } from "../cluster/primary.js";
import { workerLink } from "../cluster/worker-link.js";
import { ConfigError, loadConfig } from "../config/load.js";
import type { FileConfig } from "../config/schema.js";
import { liveRoutes } from "../observe/admin/live-routes.js";
import { metricsRoute } from "../observe/admin/metrics-route.js";
import type { AdminServer } from "../observe/admin/server.js";
import { AdminListenError, startAdmin } from "../observe/admin/start.js";
import { ev } from "../observe/events.js";
import { LocalLive } from "../observe/live/local.js";
import { closeLogger, createLogger } from "../observe/logger.js";
import { FerryMetrics } from "../observe/metrics.js";
import { formatAddress } from "../protocol/address.js";
import { startControl } from "../server/control.js";
import { assembleServer } from "../server/embed.js";
import { fdShortfall, fdsNeeded, readFdLimit } from "../server/fd-budget.js";
import { Quotas } from "../server/quotas.js";
import type { Reloader } from "../server/reload.js";
import { type FerryServer, ListenError } from "../server/server.js";
import { ServerState } from "../server/state.js";
import { sharedQuotas, sharedStore } from "../shared/state-store.js";
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
  let state: ServerState;
  let control: { close(): Promise<void> } | undefined;
  let admin: AdminServer | undefined;
  let metrics: FerryMetrics | undefined;
  let draining = false;
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
    const outputs = config.log.file ? config.log : undefined;
    if (flags.logLevel === undefined || flags.logFormat === undefined || workers > 1 || outputs) {
      log = createLogger({
        level: flags.logLevel ?? config.log.level,
        format: flags.logFormat ?? config.log.format,
        outputs,
        process: workers > 1 ? (link?.index ?? "primary") : "single",
        // Processes sharing stderr: each line says whose it is, and is written whole.
        ...(workers > 1 && { fields: { worker: link?.index ?? "primary", pid: process.pid }, sync: true }),
      });
    }
    if (!link && workers > 1) {
      try {
        return await runPrimary({ load, config, log, workers, control: flags.control ?? config.control });
      } finally {
        await closeLogger(log);
      }
    }
    // With `state: { redis }` each worker is an instance of its own in Redis, quotas included;
    // without, a worker's limits and quota counts go to its primary, which keeps the state file.
    const shared = await sharedStore(config);
    state = new ServerState(
      shared ?? link?.store,
      workers,
      sharedQuotas(shared, workers) ??
        (link && new Quotas(link.quotaStore, { shared: true, shares: workers })),
    );
    if (link) {
      state.generation = link.generation;
      state.limits.adopt(config, link.generation);
    }
    drainMs = config.timeouts.drain;
    const assembled = await assembleServer(config, state, load, log);
    ({ server, reloader } = assembled);
    // Counted from the start, so the first scrape has everything; with workers, the primary
    // asks each worker for its own (src/cluster/primary.ts).
    if (config.adminSettings) {
      metrics = new FerryMetrics(server, state, { processMetrics: true });
    }
    const listening = await server.listen();
    // The admin page's figures, counted from the first session; with workers, the primary asks.
    const live = config.adminSettings ? new LocalLive(server, state) : undefined;
    if (link && live) link.serveLive(live);
    if (link) {
      // The primary says when every worker listens, and runs the control socket.
      link.ready(listening);
      return await run();
    }
    const where = listening.map((b) => formatAddress(b));
    // One line when the limits cannot all be met; after listening, so a failure to start stays
    // the one line it is.
    const fdWarning = fdShortfall(config);
    if (fdWarning)
      log.warn(ev("fd.short", { fdLimit: readFdLimit(), fdsNeeded: fdsNeeded(config) }), fdWarning);
    log.info(
      ev("listen", { listen: where, auth: assembled.context.methods.map((m) => m.name) }),
      `ferry listening on ${where.join(", ")}`,
    );
    const gssapi = gssapiStatus();
    log.info(ev("gssapi.status", { gssapi: gssapi.available }), gssapi.line);
    const controlPath = flags.control ?? config.control;
    if (controlPath) {
      try {
        control = await startControl(controlPath, { reload: () => reloadNow("ferry reload") });
      } catch (err) {
        await server.close(0);
        throw new ListenError((err as Error).message);
      }
      log.info(
        ev("control.listen", { control: controlPath }),
        `control socket ${controlPath}: \`ferry reload --control ${controlPath}\` reloads the configuration`,
      );
    }
    if (config.adminSettings) {
      const started = await startAdmin(
        config.adminSettings,
        () => (draining ? "draining" : server.listening.length === 0 ? "not listening" : undefined),
        log,
      ).catch(async (err: unknown) => {
        await control?.close();
        await server.close(0);
        throw err;
      });
      admin = started.admin;
      const m = metrics!;
      metricsRoute(admin, () => m.text());
      liveRoutes(admin, live!, log);
      log.info(
        ev("admin.listen", { admin: formatAddress(started.address) }),
        `admin listener on http://${formatAddress(started.address)}`,
      );
    }
  } catch (err) {
    if (err instanceof ConfigError || err instanceof ListenError || err instanceof AdminListenError) {
      if (link) link.failed(err.message);
      else process.stderr.write(`ferry: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  return await run();

  async function reloadNow(why: string) {
    log.info(ev("reload.start", { trigger: why }), `${why}: reloading the configuration`);
    const result = await reloader.reload();
    metrics?.reloaded(result.ok);
    if (result.ok)
      log.info(ev("reload.ok", { opened: result.opened, closed: result.closed }), result.message);
    else log.error(ev("reload.fail"), result.message);
    return result;
  }

  /** Serves until stopped; resolves with the exit status. */
  function run(): Promise<number> {
    return new Promise<number>((resolve) => {
      const { stop } = stopper(log, drainMs, EXIT_GRACE_MS, {
        drain: (signal) => {
          log.info(
            ev("shutdown.start", { signal, sessions: server.activeSessions }),
            `${signal}: no longer accepting; draining live sessions`,
          );
          process.off("SIGHUP", onHup);
          draining = true;
          void control?.close();
          void server.close(drainMs).then(async () => {
            // Every count sent to the primary, or written to the quota state file.
            await state.quotas
              .close()
              .catch((err: Error) =>
                log.error(ev("quota.warning"), `quota counts not saved: ${err.message}`),
              );
            await admin?.close();
            log.info(ev("shutdown.done"), "stopped");
            // The file output writes what it holds before the process may end.
            void closeLogger(log).then(() => {
              // A worker's channel to the primary would keep it alive.
              link?.close();
              resolve(0);
            });
          });
        },
        cut: () => void server.close(0),
        overdue: () =>
          log.error(
            ev("shutdown.overdue", { sessions: server.activeSessions }),
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
        ...(metrics && { metrics: () => metrics!.snapshot() }),
        stop: (now) => {
          // A second stop from the primary cuts at once, whether or not a drain had begun.
          stop(now ? "second stop from the primary" : "stop from the primary", now);
        },
      });
    });
  }
}
