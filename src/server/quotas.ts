import { EventEmitter } from "node:events";
import { ConfigError } from "../config/load.js";
import { type QuotaConfig, quotaOf } from "../config/quota-schema.js";
import type { Config } from "../config/schema.js";
import { formatBytes, type QuotaSize } from "../config/units.js";
import { QuotaStateFile } from "./quota-file.js";
import { periodEnd, periodKey, type QuotaPeriod } from "./quota-period.js";
import { LocalQuotaStore, type QuotaStore } from "./quota-store.js";
import type { Meter } from "./relay.js";

/** One user's quota as it stands: what the admin page and metrics show. */
export interface QuotaStatus {
  user: string;
  period: QuotaPeriod;
  /** The period's key in the store: "day:2026-12-02", "month:2026-12" (UTC). */
  key: string;
  /** Bytes moved this period, both directions, every process (as last heard, plus this one's unsent). */
  used: number;
  limit: number;
  remaining: number;
  /** When the count starts again from zero (ISO 8601, UTC). */
  resetsAt: string;
  /** Nothing left: new sessions are refused, running ones cut at their next byte. */
  exhausted: boolean;
}

/** Why a session may not start: the user's quota is used up. */
export type QuotaAdmission = undefined | { refused: string } | QuotaLease;

/** A session's share of its user's meter: what the relay counts into, and its release at the end. */
export interface QuotaLease {
  meter: Meter;
  release(): void;
}

export interface QuotasOptions {
  /** The clock (ms since the epoch); tests move it across a period's end. */
  now?: () => number;
  /**
   * Other processes add to the store too (workers, or hosts sharing a Redis store): usage is
   * sent in batches that shrink as the quota runs out, and users with running sessions are
   * read back every tick, to learn that others used it up.
   */
  shared?: boolean;
  /** How many processes share the store; the batches are the remaining bytes split among them. */
  shares?: number;
  /** Keeps `store` (a LocalQuotaStore) in the configured state file. */
  persist?: boolean;
}

/** Usage is sent and periods rolled over this often; a reload's new limits apply at once. */
export const QUOTA_TICK_MS = 1000;
/** The smallest and largest batch a shared meter sends. */
const MIN_BATCH = 64 * 1024;
const MAX_BATCH = 16 * 1024 * 1024;
/** A meter with no session this long is forgotten (the store keeps its count). */
const FORGET_MS = 60_000;

/**
 * Per-user transfer quotas (docs/quotas.md). Each user with a quota has a meter here that every
 * session of theirs counts into, byte by byte, as the relay passes chunks on (only sessions of
 * users with a quota carry one: the plain relay path is untouched). The meter knows the store's
 * total as last heard plus what it counted since, so a session is cut on the chunk that takes
 * its user over the limit; the store hears of the usage in batches (at once for a single
 * process's store, which is then exact), and every QUOTA_TICK_MS.
 *
 * Lives in the ServerState, across reloads: `adopt` applies a new configuration's limits to the
 * running counts. Emits `exhausted` when a user goes over (once per period and process; the
 * server then cuts their sessions) and `warning` when the state file cannot be written.
 */
export class Quotas extends EventEmitter<{ exhausted: [QuotaStatus]; warning: [string] }> {
  private config: QuotaConfig | undefined;
  private readonly meters = new Map<string, UserMeter>();
  private timer: NodeJS.Timeout | undefined;
  private file: QuotaStateFile | undefined;
  readonly now: () => number;

  constructor(
    readonly store: QuotaStore = new LocalQuotaStore(),
    readonly options: QuotasOptions = {},
  ) {
    super();
    this.now = options.now ?? Date.now;
  }

  /**
   * Before a configuration is used (at start, and in a reload before it is swapped in): opens
   * the state file the first time a quota is configured. Throws when the file cannot be read,
   * which refuses the start or the reload.
   */
  async prepare(config: Config): Promise<void> {
    const quota = config.limits.quota;
    if (!quota || !this.options.persist || !(this.store instanceof LocalQuotaStore)) return;
    if (this.file) {
      if (quota.stateFile !== this.file.file)
        this.emit(
          "warning",
          `limits.quota.stateFile changed to ${quota.stateFile}: ${this.file.file} stays in use until a restart`,
        );
      return;
    }
    const onError = (m: string): void => void this.emit("warning", m);
    try {
      this.file = await QuotaStateFile.open(quota.stateFile!, this.store, onError, this.now);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  }

  /** The configuration in force from now on: its limits apply to every running count. */
  adopt(config: Config): void {
    this.config = config.limits.quota;
    for (const m of this.meters.values()) m.configure(quotaOf(this.config, m.user));
    if (this.config && !this.timer) {
      this.timer = setInterval(() => this.tick(), QUOTA_TICK_MS);
      this.timer.unref();
    }
  }

  /**
   * At request time, once the user is known: no quota (undefined), a refusal when the quota is
   * used up, or the lease the session's relay counts into. A promise when the store must be asked.
   */
  admit(user: string): QuotaAdmission | Promise<QuotaAdmission> {
    const quota = quotaOf(this.config, user);
    if (!quota) return undefined;
    let meter = this.meters.get(user);
    if (!meter) {
      meter = new UserMeter(this, user, quota);
      this.meters.set(user, meter);
    }
    const m = meter;
    m.sessions++;
    m.rollover(this.now());
    const decide = (): QuotaAdmission => {
      if (m.used() < m.limit) return { meter: m, release: () => m.release() };
      m.release();
      return { refused: m.refusal() };
    };
    // The store's total, with what this process has not sent yet: other processes may have used it up.
    const asked = m.send(true);
    return asked ? asked.then(decide) : decide();
  }

  /** Sends usage, rolls periods over, forgets idle meters. Called every QUOTA_TICK_MS. */
  tick(): void {
    const now = this.now();
    for (const [user, m] of this.meters) {
      m.rollover(now);
      if (m.pending > 0 || (this.options.shared && m.sessions > 0)) void m.send(true);
      else if (m.sessions === 0 && m.sending === 0 && now - m.idleSince > FORGET_MS) this.meters.delete(user);
    }
  }

  /** Sends everything counted here to the store and waits for every answer (at shutdown). */
  async flush(): Promise<void> {
    await Promise.all(
      [...this.meters.values()].map((m) => {
        m.send(false);
        return m.answered;
      }),
    );
  }

  /** At shutdown: every count sent, the state file written. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
    await this.file?.close();
  }

  /**
   * Every user with a quota that has moved bytes this period, and every user given a quota of
   * their own, with usage, limit and reset time; sorted by user. For the admin page and metrics.
   * In a single process and in a worker the totals are every process's (a worker asks its
   * primary); the workers' primary has one too (src/cluster/quota-host.ts).
   */
  async report(): Promise<QuotaStatus[]> {
    const config = this.config;
    if (!config) return [];
    const now = this.now();
    const usage = new Map<string, ReadonlyMap<string, number>>();
    const periods = new Set<QuotaPeriod>();
    if (config.perUser) periods.add(config.perUser.period);
    for (const q of Object.values(config.users)) if (q !== "none") periods.add(q.period);
    for (const p of periods) usage.set(p, await this.store.usage(periodKey(p, now)));
    const users = new Set<string>(Object.keys(config.users));
    for (const u of usage.values()) for (const user of u.keys()) users.add(user);
    const out: QuotaStatus[] = [];
    for (const user of [...users].sort()) {
      const quota = quotaOf(config, user);
      if (!quota) continue;
      const key = periodKey(quota.period, now);
      let used = usage.get(quota.period)?.get(user) ?? 0;
      const m = this.meters.get(user);
      if (m && m.key === key) used = Math.max(used + m.pending, m.used());
      out.push(status(user, quota, key, used, now));
    }
    return out;
  }
}

function status(user: string, quota: QuotaSize, key: string, used: number, now: number): QuotaStatus {
  return {
    user,
    period: quota.period,
    key,
    used,
    limit: quota.bytes,
    remaining: Math.max(0, quota.bytes - used),
    resetsAt: new Date(periodEnd(quota.period, now)).toISOString(),
    exhausted: used >= quota.bytes,
  };
}

/**
 * One user's count in this process. `known` is the store's total as last heard, `sending` what
 * was sent and not yet answered, `pending` what was counted here since: their sum is the best
 * knowledge of the user's usage, and it is exact when this process is the only one counting.
 */
class UserMeter implements Meter {
  limit = Number.POSITIVE_INFINITY;
  period: QuotaPeriod = "day";
  key = "";
  resetsAt = 0;
  known = 0;
  sending = 0;
  pending = 0;
  /** Sent to the store once this many bytes are pending. */
  batch = 0;
  sessions = 0;
  idleSince = 0;
  /** The last send's answer (a shared store answers in order): when everything sent is in. */
  answered: Promise<void> | undefined;
  /** The period whose exhaustion was announced (once per period). */
  private announced: string | undefined;

  constructor(
    private readonly quotas: Quotas,
    readonly user: string,
    quota: QuotaSize,
  ) {
    this.configure(quota);
  }

  used(): number {
    return this.known + this.sending + this.pending;
  }

  /** A new limit (a reload): applies to the count as it stands; a new period counts under its key. */
  configure(quota: QuotaSize | undefined): void {
    this.limit = quota?.bytes ?? Number.POSITIVE_INFINITY;
    const period = quota?.period ?? this.period;
    if (period !== this.period || this.key === "") {
      // What was counted belongs to the period it was counted in.
      if (this.key !== "") void this.send(false);
      this.period = period;
      this.rekey(this.quotas.now());
      if (this.sessions > 0) void this.send(true);
    }
    this.rebatch();
    // Raised above the count: going over again is news again.
    if (this.used() <= this.limit) this.announced = undefined;
    else this.exhaust();
  }

  /** At a period's end the count starts from zero under the new period's key. */
  rollover(now: number): void {
    if (now < this.resetsAt) return;
    void this.send(false);
    this.rekey(now);
    this.rebatch();
  }

  private rekey(now: number): void {
    this.key = periodKey(this.period, now);
    this.resetsAt = periodEnd(this.period, now);
    this.known = 0;
    this.sending = 0;
  }

  /** The relay's per-chunk call: counts `n` bytes; returns why the session must end, if it must. */
  count(n: number): string | undefined {
    this.pending += n;
    if (this.known + this.sending + this.pending > this.limit) {
      void this.send(false);
      this.exhaust();
      return `user ${this.user} has used up the transfer quota (${formatBytes(this.limit)}/${this.period}); it resets at ${new Date(this.resetsAt).toISOString()}`;
    }
    if (this.pending >= this.batch) void this.send(false);
    return undefined;
  }

  refusal(): string {
    return `user ${this.user} is over the transfer quota: ${formatBytes(this.used())} of ${formatBytes(this.limit)} used this ${this.period} (UTC); it resets at ${new Date(this.resetsAt).toISOString()}`;
  }

  release(): void {
    // What the session counted last goes to the store now, not at the next tick.
    void this.send(false);
    if (--this.sessions === 0) this.idleSince = this.quotas.now();
  }

  /**
   * Sends what is pending (with `read`, even nothing: to hear the total). Returns a promise
   * only when the store answers later.
   */
  send(read: boolean): Promise<void> | undefined {
    if (this.pending === 0 && !read) return undefined;
    const n = this.pending;
    const key = this.key;
    this.pending = 0;
    this.sending += n;
    let total: number | Promise<number>;
    try {
      total = this.quotas.store.add(this.user, key, n);
    } catch {
      this.unsent(key, n);
      return undefined;
    }
    if (typeof total === "number") {
      this.heard(key, n, total);
      return undefined;
    }
    this.answered = total.then(
      (t) => this.heard(key, n, t),
      () => this.unsent(key, n),
    );
    return this.answered;
  }

  private heard(key: string, n: number, total: number): void {
    // An answer about a period that has since ended changes nothing now.
    if (key !== this.key) return;
    this.sending -= n;
    // Answers may cross; totals only grow.
    this.known = Math.max(this.known, total);
    this.rebatch();
    if (this.used() > this.limit) this.exhaust();
  }

  /** The store did not take them: counted again with the next batch. */
  private unsent(key: string, n: number): void {
    if (key !== this.key) return;
    this.sending -= n;
    this.pending += n;
  }

  /**
   * Alone, the meter sees every byte and the store may hear at once. Shared, each process may
   * hold back a share of what is left (so together they cannot overrun it by much), at least
   * MIN_BATCH so that the messages stay few.
   */
  private rebatch(): void {
    const { shared, shares = 1 } = this.quotas.options;
    if (!shared) {
      this.batch = 0;
      return;
    }
    const left = Math.max(0, this.limit - this.used());
    this.batch = Math.min(MAX_BATCH, Math.max(MIN_BATCH, Math.floor(left / (2 * Math.max(1, shares)))));
  }

  /** Announces, once per period, that the user has gone over: the server cuts their sessions. */
  private exhaust(): void {
    if (this.announced === this.key) return;
    this.announced = this.key;
    const s = status(
      this.user,
      { bytes: this.limit, period: this.period },
      this.key,
      this.used(),
      this.quotas.now(),
    );
    // Not from inside the relay's chunk handler that noticed it.
    setImmediate(() => this.quotas.emit("exhausted", s));
  }
}
