import type { QuotaStore } from "../server/quota-store.js";
import type { PrimaryChannel } from "./worker-store.js";

/**
 * A worker's quota store: the counts are the primary's (src/cluster/quota-host.ts), which keeps
 * them for every worker and in the state file. The worker's meters (src/server/quotas.ts) send
 * their usage in batches; each answer carries the total, every worker's usage included, and so
 * tells the worker when the others have used the quota up.
 */
export class WorkerQuotaStore implements QuotaStore {
  private readonly waiting = new Map<number, (m: unknown) => void>();
  private nextId = 1;
  private closed = false;

  constructor(private readonly channel: PrimaryChannel) {
    channel.listen((m) => {
      if (m === undefined) {
        // The primary is gone: nothing will be answered.
        this.closed = true;
        for (const resolve of this.waiting.values()) resolve(undefined);
        this.waiting.clear();
        return;
      }
      if (m.ferry !== "quotaTotal" && m.ferry !== "quotaUsage") return;
      const resolve = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      resolve?.(m);
    });
  }

  async add(user: string, period: string, bytes: number): Promise<number> {
    const id = this.nextId++;
    const m = await this.ask({ ferry: "quotaAdd", id, user, period, bytes }, id);
    if (m?.ferry !== "quotaTotal") throw new Error("the quota store (the primary) is gone");
    return m.total;
  }

  async usage(period: string): Promise<ReadonlyMap<string, number>> {
    const id = this.nextId++;
    const m = await this.ask({ ferry: "quotaUsage", id, period }, id);
    if (m?.ferry !== "quotaUsage") throw new Error("the quota store (the primary) is gone");
    return new Map(Object.entries(m.usage));
  }

  private ask(
    m: Parameters<PrimaryChannel["send"]>[0],
    id: number,
  ): Promise<
    | { ferry: "quotaTotal"; total: number }
    | { ferry: "quotaUsage"; usage: Record<string, number> }
    | undefined
  > {
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.waiting.set(id, resolve as (m: unknown) => void);
      this.channel.send(m);
    });
  }
}
