/**
 * Where the bytes each user has moved in each quota period are counted (docs/quotas.md). A
 * period is a key such as "day:2026-12-02" or "month:2026-12" (src/server/quota-period.ts).
 * The store knows nothing of limits: it adds and tells totals; the limits are the caller's.
 *
 * With one process it is this process's memory (LocalQuotaStore, saved to the state file);
 * with workers the primary keeps it and each worker adds its usage in batches
 * (src/cluster/worker-quota-store.ts). A store on Redis maps onto a hash per period: `add` is
 * HINCRBY, `usage` is HGETALL (and the hash expires a while after its period ends).
 */
export interface QuotaStore {
  /**
   * Adds `bytes` (≥ 0) to what `user` has moved in `period` and returns the total after adding,
   * all processes together. Adding 0 reads the total. A shared store returns a promise.
   */
  add(user: string, period: string, bytes: number): number | Promise<number>;
  /** Every user's total in `period` (users who moved nothing are absent): for reports. */
  usage(period: string): ReadonlyMap<string, number> | Promise<ReadonlyMap<string, number>>;
}

/** What the state file holds: period → user → bytes. */
export type QuotaSnapshot = Record<string, Record<string, number>>;

/** The store of one process (or of the workers' primary): maps in memory, saved as a snapshot. */
export class LocalQuotaStore implements QuotaStore {
  private readonly periods = new Map<string, Map<string, number>>();
  /** Changed since the last snapshot: the state file needs writing. */
  dirty = false;

  add(user: string, period: string, bytes: number): number {
    let users = this.periods.get(period);
    if (!users) {
      users = new Map();
      this.periods.set(period, users);
    }
    const total = (users.get(user) ?? 0) + bytes;
    if (bytes > 0) {
      users.set(user, total);
      this.dirty = true;
    }
    return total;
  }

  usage(period: string): ReadonlyMap<string, number> {
    return new Map(this.periods.get(period));
  }

  /** Forgets the periods not in `keep` (those that have ended). */
  prune(keep: ReadonlySet<string>): void {
    for (const period of this.periods.keys()) {
      if (!keep.has(period)) {
        this.periods.delete(period);
        this.dirty = true;
      }
    }
  }

  snapshot(): QuotaSnapshot {
    const out: QuotaSnapshot = {};
    for (const [period, users] of this.periods) out[period] = Object.fromEntries(users);
    return out;
  }

  /** Adds the counts of a snapshot (the state file read at start). */
  restore(snapshot: QuotaSnapshot): void {
    for (const [period, users] of Object.entries(snapshot)) {
      for (const [user, bytes] of Object.entries(users)) {
        if (Number.isFinite(bytes) && bytes > 0) this.add(user, period, bytes);
      }
    }
  }
}
