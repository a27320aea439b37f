import cluster, { type Worker } from "node:cluster";
import { EXIT_GRACE_MS, stopper } from "../cli/stop-signals.js";
import type { Config } from "../config/schema.js";
import { liveRoutes } from "../observe/admin/live-routes.js";
import { metricsRoute } from "../observe/admin/metrics-route.js";
import type { AdminServer } from "../observe/admin/server.js";
import { startAdmin } from "../observe/admin/start.js";
import { ev } from "../observe/events.js";
import type { Logger } from "../observe/logger.js";
import { formatAddress } from "../protocol/address.js";
import { startControl } from "../server/control.js";
import { fdShortfall, fdsNeeded, readFdLimit } from "../server/fd-budget.js";
import { LocalQuotaStore } from "../server/quota-store.js";
import { Quotas } from "../server/quotas.js";
import type { ReloadResult } from "../server/reload.js";
import type { ListeningAddress } from "../server/server.js";
import { LimitHost } from "./limit-host.js";
import { ClusterLive } from "./live-host.js";
import {
  GENERATION_ENV,
  isFerryMessage,
  type ToPrimary,
  type ToWorker,
  WORKER_COUNT_ENV,
  WORKER_INDEX_ENV,
} from "./messages.js";
import { ClusterMetrics } from "./primary-admin.js";
import { answerQuota } from "./quota-host.js";

export interface PrimaryOptions {
  load: () => Promise<Config>;
  config: Config;
  log: Logger;
  workers: number;
  control?: string;
}

/** A worker must be listening within this long of its start. */
const START_TIMEOUT_MS = 30_000;
/** A worker's answer to a reload. */
const RELOAD_TIMEOUT_MS = 30_000;
/** A worker that dies sooner than this after its start is restarted after a growing pause. */
const STABLE_MS = 5000;
const RESTART_PAUSE_MAX_MS = 10_000;

/** One place in the pool: its worker comes and goes, the index stays. */
interface Slot {
  index: number;
  worker?: Worker;
  /** Listening, and so able to take a reload. */
  ready: boolean;
  listening: ListeningAddress[];
  startedAt: number;
  /** The reload generation its configuration belongs to. */
  generation: number;
  /** Quick deaths in a row, for the pause before the next start. */
  crashes: number;
}

/**
 * The primary of `ferry serve` with workers: it forks them (each runs `ferry serve` as a cluster
 * worker, src/cli/serve.ts), keeps the limits they share (LimitHost), passes reloads and stops
 * on to every one, and replaces a worker that dies. It serves no connection itself.
 */
export async function runPrimary(options: PrimaryOptions): Promise<number> {
  const { load, log, workers } = options;
  const drainMs = options.config.timeouts.drain;
  // Workers accept from the shared socket themselves (docs/workers.md); the environment's
  // NODE_CLUSTER_SCHED_POLICY, when set, wins.
  if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = cluster.SCHED_NONE;
  // Until every worker listens a reload has nothing to reach, and a stop waits for the start;
  // without handlers these signals would end the primary and orphan its workers.
  const early = (): void => {};
  process.on("SIGHUP", early);
  const host = new LimitHost();
  // The workers' quota counts are kept here, and in the state file (docs/quotas.md).
  const quotaStore = new LocalQuotaStore();
  const quotas = new Quotas(quotaStore, { persist: true });
  quotas.on("warning", (m) => log.warn(ev("quota.warning"), m));
  try {
    await quotas.prepare(options.config);
  } catch (err) {
    process.off("SIGHUP", early);
    process.stderr.write(`ferry: ${(err as Error).message}\n`);
    return 1;
  }
  quotas.adopt(options.config);
  const slots: Slot[] = Array.from({ length: workers }, (_, i) => ({
    index: i + 1,
    ready: false,
    listening: [],
    startedAt: 0,
    generation: 0,
    crashes: 0,
  }));
  let generation = 0;
  let stopping = false;
  let started = false;
  const replies = new Map<number, (m: ToPrimary) => void>();
  // The admin page asks every running worker for its sessions.
  const live = new ClusterLive(() =>
    slots.map((s) => ({
      index: s.index,
      send: (m: ToWorker) => {
        if (!s.ready || !s.worker?.isConnected()) return false;
        s.worker.send(m);
        return true;
      },
    })),
  );
  let nextId = 1;
  let onStarted: ((failure?: string) => void) | undefined;
  let onAllExited: (() => void) | undefined;
  // The admin listener is the primary's alone; /metrics sums what every worker counts.
  const metrics = options.config.adminSettings
    ? new ClusterMetrics(() => slots.flatMap((s) => (s.worker ? [s.worker] : [])))
    : undefined;

  const sendTo = (worker: Worker | undefined, m: ToWorker): void => {
    if (worker?.isConnected()) worker.send(m);
  };

  const start = (slot: Slot): void => {
    const worker = cluster.fork({
      [WORKER_INDEX_ENV]: String(slot.index),
      [WORKER_COUNT_ENV]: String(workers),
      [GENERATION_ENV]: String(generation),
    });
    slot.worker = worker;
    slot.ready = false;
    slot.startedAt = performance.now();
    slot.generation = generation;
    const pid = worker.process.pid;
    host.attach(worker.id, (m) => sendTo(worker, m));
    worker.on("message", (m: unknown) => {
      if (!isFerryMessage(m)) return;
      const msg = m as ToPrimary;
      if (msg.ferry === "ready") {
        slot.ready = true;
        slot.listening = msg.listening;
        if (started) {
          log.info(
            ev("worker.listen", { workerIndex: slot.index, workerPid: pid }),
            `worker ${slot.index} (pid ${pid}) listening`,
          );
          if (slot.generation < generation) void catchUp(slot);
        }
        if (slots.every((s) => s.ready)) onStarted?.();
        return;
      }
      if (msg.ferry === "failed") {
        if (!started) onStarted?.(msg.message);
        else
          log.error(
            ev("worker.fail", { workerIndex: slot.index, workerPid: pid }),
            `worker ${slot.index} could not start: ${msg.message}`,
          );
        return;
      }
      if (msg.ferry === "reloaded") {
        replies.get(msg.id)?.(msg);
        return;
      }
      if (live.receive(msg)) return;
      if (msg.ferry === "metrics") {
        metrics?.receive(worker, msg.id, msg.metrics);
        return;
      }
      const quotaAnswer = answerQuota(quotaStore, msg);
      if (quotaAnswer) sendTo(worker, quotaAnswer);
      else host.receive(worker.id, msg);
    });
    worker.on("error", () => {});
    worker.on("exit", (code, signal) => {
      host.detach(worker.id);
      void metrics?.exited(worker);
      if (slot.worker === worker) slot.worker = undefined;
      slot.ready = false;
      if (stopping) {
        if (slots.every((s) => !s.worker)) onAllExited?.();
        return;
      }
      if (!started) {
        onStarted?.(`worker ${slot.index} exited (${signal ?? `code ${code}`}) before listening`);
        return;
      }
      const lived = performance.now() - slot.startedAt;
      slot.crashes = lived < STABLE_MS ? slot.crashes + 1 : 0;
      const pause = slot.crashes === 0 ? 0 : Math.min(RESTART_PAUSE_MAX_MS, 500 * 2 ** (slot.crashes - 1));
      log.error(
        ev("worker.exit", { workerIndex: slot.index, workerPid: pid, code, signal }),
        `worker ${slot.index} (pid ${pid}) exited (${signal ?? `code ${code}`}); the other workers' sessions go on; starting another${pause ? ` in ${pause} ms` : ""}`,
      );
      setTimeout(() => {
        if (!stopping) start(slot);
      }, pause);
    });
  };

  /** Asks one worker to reload to the current generation; its answer, or why there is none. */
  const reloadOne = (slot: Slot, gen: number): Promise<{ ok: boolean; message: string }> => {
    const worker = slot.worker;
    if (!worker?.isConnected() || !slot.ready) {
      return Promise.resolve({ ok: false, message: "not running" });
    }
    const id = nextId++;
    return new Promise((resolve) => {
      const done = (r: { ok: boolean; message: string }) => {
        clearTimeout(timer);
        replies.delete(id);
        worker.off("exit", gone);
        resolve(r);
      };
      const timer = setTimeout(() => done({ ok: false, message: "no answer" }), RELOAD_TIMEOUT_MS);
      const gone = () => done({ ok: false, message: "exited during the reload" });
      worker.once("exit", gone);
      replies.set(id, (m) => {
        if (m.ferry !== "reloaded") return;
        if (m.ok) slot.generation = gen;
        done({ ok: m.ok, message: m.message });
      });
      sendTo(worker, { ferry: "reload", id, generation: gen });
    });
  };

  /** A worker started before the last reload reached it takes that reload now. */
  const catchUp = async (slot: Slot): Promise<void> => {
    const r = await reloadOne(slot, generation);
    if (r.ok)
      log.info(
        ev("worker.reload.ok", { workerIndex: slot.index }),
        `worker ${slot.index} took the last reload: ${r.message}`,
      );
    else
      log.error(
        ev("worker.reload.fail", { workerIndex: slot.index }),
        `worker ${slot.index} did not take the last reload: ${r.message}`,
      );
  };

  let reloads: Promise<unknown> = Promise.resolve();
  const reloadAll = (why: string): Promise<ReloadResult> => {
    const next = reloads.then(async (): Promise<ReloadResult> => {
      log.info(ev("reload.start", { trigger: why }), `${why}: reloading the configuration`);
      const none = { opened: [], closed: [] };
      // Checked here first, so a bad file is refused once, before any worker sees it.
      let config: Config;
      try {
        config = await load();
        await quotas.prepare(config);
      } catch (err) {
        const message = `reload refused, the running configuration stays: ${(err as Error).message}`;
        log.error(ev("reload.fail"), message);
        metrics?.own.reloaded(false);
        return { ok: false, message, ...none };
      }
      const gen = ++generation;
      const answers = await Promise.all(slots.map((s) => reloadOne(s, gen)));
      const failed = answers.flatMap((a, i) => (a.ok ? [] : [`worker ${slots[i]!.index}: ${a.message}`]));
      // The primary's report shows the new limits; the workers apply them to their meters.
      if (answers.some((a) => a.ok)) quotas.adopt(config);
      if (failed.length === 0) {
        const message = `${answers[0]!.message} (in all ${workers} workers)`;
        log.info(ev("reload.ok"), message);
        metrics?.own.reloaded(true);
        return { ok: true, message, ...none };
      }
      const message = `reload not taken everywhere: ${failed.join("; ")}`;
      log.error(ev("reload.fail"), message);
      metrics?.own.reloaded(false);
      return { ok: false, message, ...none };
    });
    reloads = next.catch(() => {});
    return next;
  };

  // Start every worker; all must listen, or none stays.
  const failure = await new Promise<string | undefined>((resolve) => {
    const timer = setTimeout(
      () => resolve(`the workers did not all listen within ${START_TIMEOUT_MS} ms`),
      START_TIMEOUT_MS,
    );
    onStarted = (why) => {
      clearTimeout(timer);
      onStarted = undefined;
      resolve(why);
    };
    for (const slot of slots) start(slot);
  });
  if (failure !== undefined) {
    stopping = true;
    await stopWorkers(slots, (cb) => (onAllExited = cb));
    process.stderr.write(`ferry: ${failure}\n`);
    return 1;
  }
  started = true;

  // They share every socket: the first worker's addresses are everyone's.
  const where = slots[0]!.listening.map((b) => formatAddress(b));
  const fdWarning = fdShortfall(options.config);
  if (fdWarning)
    log.warn(ev("fd.short", { fdLimit: readFdLimit(), fdsNeeded: fdsNeeded(options.config) }), fdWarning);
  log.info(
    ev("listen", { listen: where, workers, workerPids: slots.map((s) => s.worker?.process.pid) }),
    `ferry listening on ${where.join(", ")} with ${workers} workers`,
  );

  let control: { close(): Promise<void> } | undefined;
  if (options.control) {
    try {
      control = await startControl(options.control, { reload: () => reloadAll("ferry reload") });
    } catch (err) {
      stopping = true;
      await stopWorkers(slots, (cb) => (onAllExited = cb));
      process.stderr.write(`ferry: ${(err as Error).message}\n`);
      return 1;
    }
    log.info(
      ev("control.listen", { control: options.control }),
      `control socket ${options.control}: \`ferry reload --control ${options.control}\` reloads the configuration`,
    );
  }

  let admin: AdminServer | undefined;
  if (metrics && options.config.adminSettings) {
    try {
      const started = await startAdmin(
        options.config.adminSettings,
        () => {
          if (stopping) return "draining";
          const listening = slots.filter((s) => s.ready).length;
          return listening === workers ? undefined : `${listening} of ${workers} workers listening`;
        },
        log,
      );
      admin = started.admin;
      metricsRoute(admin, () => metrics.text());
      liveRoutes(admin, live, log);
      log.info(
        ev("admin.listen", { admin: formatAddress(started.address) }),
        `admin listener on http://${formatAddress(started.address)}`,
      );
    } catch (err) {
      stopping = true;
      await control?.close();
      await stopWorkers(slots, (cb) => (onAllExited = cb));
      process.stderr.write(`ferry: ${(err as Error).message}\n`);
      return 1;
    }
  }

  return new Promise<number>((resolve) => {
    onAllExited = () => {
      // The workers sent their last counts as they stopped: all of them go in the state file.
      void quotas
        .close()
        .catch((err: Error) => log.error(ev("quota.warning"), `quota counts not saved: ${err.message}`))
        .then(() => admin?.close())
        .then(() => {
          log.info(ev("shutdown.done"), "stopped");
          resolve(0);
        });
    };
    // The workers' own backstops come first; this one is for a worker that hangs.
    const { stop } = stopper(log, drainMs, EXIT_GRACE_MS * 2, {
      drain: (signal) => {
        stopping = true;
        log.info(
          ev("shutdown.start", { signal, workers: slots.filter((s) => s.worker).length }),
          `${signal}: no longer accepting; draining every worker`,
        );
        process.off("SIGHUP", onHup);
        void control?.close();
        for (const s of slots) sendTo(s.worker, { ferry: "stop", now: false });
        if (slots.every((s) => !s.worker)) onAllExited?.();
      },
      cut: () => {
        for (const s of slots) sendTo(s.worker, { ferry: "stop", now: true });
      },
      overdue: () => {
        const left = slots.filter((s) => s.worker);
        log.error(
          ev("shutdown.overdue", { workerPids: left.map((s) => s.worker?.process.pid) }),
          `${left.length} workers still running ${EXIT_GRACE_MS} ms after their sessions were cut: killing them`,
        );
        for (const s of left) s.worker?.process.kill("SIGKILL");
      },
    });
    const onHup = (): void => void reloadAll("SIGHUP");
    process.on("SIGHUP", onHup);
    process.off("SIGHUP", early);
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));
  });
}

/** Stops every worker at once (a failed start): asked, then killed if it does not go. */
async function stopWorkers(slots: Slot[], onExited: (cb: () => void) => void): Promise<void> {
  const live = slots.filter((s) => s.worker);
  if (live.length === 0) return;
  await new Promise<void>((resolve) => {
    onExited(resolve);
    for (const s of live) {
      if (s.worker?.isConnected()) s.worker.send({ ferry: "stop", now: true } satisfies ToWorker);
      else s.worker?.process.kill("SIGTERM");
    }
    setTimeout(() => {
      for (const s of slots) s.worker?.process.kill("SIGKILL");
    }, EXIT_GRACE_MS).unref();
  });
}
