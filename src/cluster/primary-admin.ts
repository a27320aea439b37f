import type { Worker } from "node:cluster";
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from "prom-client";
import { FerryMetrics } from "../observe/metrics.js";
import type { ToWorker } from "./messages.js";

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** A worker that has not answered within this long is left out of one scrape. */
const ANSWER_MS = 5000;

/**
 * /metrics for a cluster: the primary asks every worker for its registry over our own IPC
 * messages (`ferry: "metrics"`, src/cluster/messages.ts) and sums them with prom-client's
 * AggregatorRegistry.aggregate, together with its own (reloads, its process metrics). Only the
 * static aggregate is used: an AggregatorRegistry instance would install prom-client's own
 * message listeners, which are not needed.
 *
 * A worker that exits takes its counters with it; what it had counted at its last scrape is kept
 * (counters and histograms, not gauges), so the sums do not fall back when a worker is replaced.
 */
export class ClusterMetrics {
  /** The primary's own: reloads, and its process metrics. */
  readonly own = new FerryMetrics(undefined, undefined, { processMetrics: true });
  private readonly waiting = new Map<number, (metrics: MetricsJson | undefined) => void>();
  private readonly last = new Map<Worker, MetricsJson>();
  private retired: MetricsJson | undefined;
  private nextId = 1;

  constructor(private readonly workers: () => Worker[]) {}

  /** A worker's answer (its `ferry: "metrics"` message). */
  receive(worker: Worker, id: number, metrics: unknown[]): void {
    const resolve = this.waiting.get(id);
    this.waiting.delete(id);
    this.last.set(worker, metrics as MetricsJson);
    resolve?.(metrics as MetricsJson);
  }

  /** Keeps what an exited worker had counted. */
  async exited(worker: Worker): Promise<void> {
    const last = this.last.get(worker);
    this.last.delete(worker);
    if (!last) return;
    const kept = last.filter((m) => ["counter", "histogram"].includes(String(m.type)));
    this.retired = this.retired ? await merge([this.retired, kept]) : kept;
  }

  /** Every worker's metrics and the primary's, summed, in the text format. */
  async text(): Promise<string> {
    const answers = await Promise.all(this.workers().map((w) => this.ask(w)));
    const all = [await this.own.snapshot(), ...answers.filter((a) => a !== undefined)];
    if (this.retired) all.push(this.retired);
    return await AggregatorRegistry.aggregate(all).metrics();
  }

  private ask(worker: Worker): Promise<MetricsJson | undefined> {
    if (!worker.isConnected()) return Promise.resolve(undefined);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(undefined), ANSWER_MS);
      const done = (m: MetricsJson | undefined): void => {
        clearTimeout(timer);
        this.waiting.delete(id);
        worker.off("exit", gone);
        resolve(m);
      };
      const gone = (): void => done(undefined);
      worker.once("exit", gone);
      this.waiting.set(id, done);
      worker.send({ ferry: "metrics", id } satisfies ToWorker);
    });
  }
}

async function merge(sets: MetricsJson[]): Promise<MetricsJson> {
  return (await AggregatorRegistry.aggregate(sets).getMetricsAsJSON()) as MetricsJson;
}
