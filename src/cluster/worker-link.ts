import type { LiveSource } from "../observe/live/view.js";
import type { ReloadResult } from "../server/reload.js";
import type { ListeningAddress } from "../server/server.js";
import {
  GENERATION_ENV,
  isFerryMessage,
  type ToPrimary,
  type ToWorker,
  WORKER_COUNT_ENV,
  WORKER_INDEX_ENV,
} from "./messages.js";
import { WorkerQuotaStore } from "./worker-quota-store.js";
import { WorkerLimitStore } from "./worker-store.js";

/** A cluster worker's side of its primary: who it is, the shared limits, reload and stop. */
export interface WorkerLink {
  /** 1-based, kept by a replacement. */
  index: number;
  /** Workers in all. */
  count: number;
  /** The reload generation the configuration this worker read at start belongs to. */
  generation: number;
  store: WorkerLimitStore;
  /** Quota counts, kept by the primary. */
  quotaStore: WorkerQuotaStore;
  ready(listening: ListeningAddress[]): void;
  failed(message: string): void;
  serve(handlers: {
    reload(generation: number): Promise<ReloadResult>;
    stop(now: boolean): void;
    /** This worker's metrics as prom-client's JSON, when it counts them (admin: is set). */
    metrics?: () => Promise<unknown[]>;
  }): void;
  /** Answers the primary's questions for the admin page from `live`. */
  serveLive(live: LiveSource): void;
  /** Lets go of the channel, so the process can exit. */
  close(): void;
}

/** The link of this process, a worker the primary forked (src/cluster/primary.ts). */
export function workerLink(): WorkerLink {
  const send = (m: ToPrimary): void => {
    if (process.connected) process.send!(m);
  };
  const listeners: ((m: ToWorker | undefined) => void)[] = [];
  process.on("message", (m: unknown) => {
    if (isFerryMessage(m)) for (const l of listeners) l(m as ToWorker);
  });
  // The primary is gone (killed, say): nothing shared can be asked any more.
  process.once("disconnect", () => {
    for (const l of listeners) l(undefined);
  });
  const channel = { send, listen: (handler: (m: ToWorker | undefined) => void) => listeners.push(handler) };
  const store = new WorkerLimitStore(channel);
  const quotaStore = new WorkerQuotaStore(channel);
  return {
    index: Number(process.env[WORKER_INDEX_ENV] ?? 1),
    count: Number(process.env[WORKER_COUNT_ENV] ?? 1),
    generation: Number(process.env[GENERATION_ENV] ?? 0),
    store,
    quotaStore,
    ready: (listening) => send({ ferry: "ready", listening }),
    failed: (message) => {
      // Let go of the channel only once the message is on its way.
      if (process.connected) process.send!({ ferry: "failed", message }, () => process.disconnect());
    },
    serve(handlers) {
      listeners.push((m) => {
        if (m === undefined) return handlers.stop(false);
        if (m.ferry === "stop") handlers.stop(m.now);
        else if (m.ferry === "metrics") {
          void (handlers.metrics?.() ?? Promise.resolve([])).then(
            (metrics) => send({ ferry: "metrics", id: m.id, metrics }),
            () => send({ ferry: "metrics", id: m.id, metrics: [] }),
          );
        } else if (m.ferry === "reload") {
          void handlers
            .reload(m.generation)
            .then((r) => send({ ferry: "reloaded", id: m.id, ok: r.ok, message: r.message }));
        }
      });
    },
    serveLive(live) {
      listeners.push((m) => {
        if (m?.ferry === "live") {
          void live.snapshot().then((snapshot) => send({ ferry: "live", id: m.id, snapshot }));
        } else if (m?.ferry === "end") {
          const ended =
            m.session !== undefined
              ? live.end(m.session, m.reason).then((v) => (v ? [v] : []))
              : live.endUser(m.user ?? "", m.reason);
          void ended.then((list) => send({ ferry: "ended", id: m.id, ended: list }));
        }
      });
    },
    close: () => {
      if (process.connected) process.disconnect();
    },
  };
}
