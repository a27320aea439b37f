import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import { Redis, type RedisOptions } from "ioredis";
import { LoginGuard, type LoginThrottle } from "../auth/login-guard.js";
import { type Claim, type LimitStore, type Taken, takenSlots } from "../server/limit-store.js";
import type { TokenBucket } from "../server/limits.js";
import { RedisBucket } from "./redis-bucket.js";
import { RedisFailures } from "./redis-logins.js";
import { FAIL, FAILURES, HEARTBEAT, HOLD, RELEASE, TAKE, TOKENS } from "./redis-scripts.js";

/** How often an instance says it is alive. */
const HEARTBEAT_MS = 1000;
/** An instance silent this long is taken for dead, and its slots are free again. */
const INSTANCE_TTL_MS = 5000;
/** A command not answered in this long counts as Redis unreachable. */
const COMMAND_TIMEOUT_MS = 1000;

export interface RedisStoreOptions {
  /** redis://[:password@]host:port/db, or rediss:// for TLS. */
  url: string;
  /** Overrides a password in the URL (read from passwordFile by the caller). */
  password?: string;
  /** Prefix of every key, so several Ferry fleets (or tests) can share one Redis. */
  prefix?: string;
  /** How long an instance stays alive without a heartbeat (tests shorten it). */
  instanceTtlMs?: number;
}

/** Whether the limits are shared right now, as the log and metrics read it. */
export interface SharedStatus {
  shared: boolean;
  /** Why not, when not. */
  error?: string;
  /** Since when (ms since the epoch). */
  since: number;
}

type Script = (...args: (string | number)[]) => Promise<unknown>;

/**
 * Limits shared by every Ferry instance pointed at one Redis (or Valkey): session counts,
 * bandwidth buckets and failed logins.
 *
 * Sessions: each counter is a hash in Redis, one field per instance with the slots it holds, and
 * a script counts and takes in one step (redis-scripts.ts). Instances beat every second into a
 * sorted set; the slots of one silent for instanceTtlMs no longer count, so a crashed instance
 * holds nothing for long. The instance also keeps its own slots here (`held`): that is what it
 * writes back whenever Redis has lost or dropped them (a restart, a long pause).
 *
 * Bandwidth: a token bucket per key in Redis; an instance takes a few hundred ms of bytes at a
 * time (redis-bucket.ts), not a request per packet.
 *
 * When Redis cannot be reached, the instance carries on alone: the caps count only its own
 * sessions, its buckets fill by its clock and failed logins are remembered here. It says so
 * once (`status` event, `status` getter), keeps beating, and when a beat succeeds again it
 * writes back its slots and shares again.
 */
/** A month and a few days: a period's counts outlive it, for reports near its end. */
const QUOTA_KEEP_MS = 35 * 24 * 3600 * 1000;

export class RedisLimitStore extends EventEmitter<{ status: [SharedStatus] }> implements LimitStore {
  readonly instance = `${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
  readonly logins: LoginThrottle;
  readonly prefix: string;
  private readonly client: Redis;
  private readonly ttl: number;
  /** Slots this instance holds, by counter: the truth it writes back to Redis. */
  private readonly held = new Map<string, number>();
  /** Counters whose Redis field may differ from `held` (a command that failed): written back too. */
  private readonly unsynced = new Set<string>();
  private current: SharedStatus = { shared: false, error: "not connected yet", since: Date.now() };
  private readonly timer: NodeJS.Timeout;
  private beating = false;
  /** Whether `current` has been told (the first state is told whichever it is). */
  private announced = false;
  private closed = false;
  private readonly scripts: Record<
    "take" | "release" | "beat" | "tokens" | "failures" | "fail" | "hold",
    Script
  >;

  constructor(options: RedisStoreOptions) {
    super();
    this.prefix = options.prefix ?? "ferry:";
    this.ttl = options.instanceTtlMs ?? INSTANCE_TTL_MS;
    const redisOptions: RedisOptions = {
      // Fail at once while disconnected: a session must not wait for Redis to come back.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: 2000,
      // Keep trying to reconnect, at most every 2 s.
      retryStrategy: (times) => Math.min(times * 100, 2000),
      lazyConnect: false,
    };
    if (options.password !== undefined) redisOptions.password = options.password;
    this.client = new Redis(options.url, redisOptions);
    // ioredis reports every failed reconnect; the store says it once, in `status`.
    this.client.on("error", (err: Error) => this.down(err.message));
    this.client.on("close", () => this.down("connection closed"));
    this.client.on("ready", () => void this.beat());
    const define = (name: string, lua: string): Script => {
      this.client.defineCommand(name, { lua });
      const fn = (this.client as unknown as Record<string, Script>)[name]!;
      return fn.bind(this.client);
    };
    this.scripts = {
      take: define("ferryTake", TAKE),
      release: define("ferryRelease", RELEASE),
      beat: define("ferryBeat", HEARTBEAT),
      tokens: define("ferryTokens", TOKENS),
      failures: define("ferryFailures", FAILURES),
      fail: define("ferryFail", FAIL),
      hold: define("ferryHold", HOLD),
    };
    this.logins = new LoginGuard({}, new RedisFailures(this));
    this.timer = setInterval(() => void this.beat(), Math.min(HEARTBEAT_MS, this.ttl / 3));
    this.timer.unref();
  }

  /** Whether the limits are shared now, since when, and why not. */
  get status(): SharedStatus {
    return this.current;
  }

  get shared(): boolean {
    return this.current.shared;
  }

  /** Resolves once the limits are shared (or rejects after `ms`): for start-up and tests. */
  ready(ms = 5000): Promise<void> {
    if (this.shared) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("status", on);
        reject(new Error(`Redis not reachable within ${ms} ms: ${this.current.error}`));
      }, ms);
      const on = (s: SharedStatus) => {
        if (!s.shared) return;
        clearTimeout(timer);
        this.off("status", on);
        resolve();
      };
      this.on("status", on);
    });
  }

  take(claims: readonly Claim[]): Taken | Promise<Taken> {
    // What this instance alone holds already fills a claim: no need to ask.
    for (let i = 0; i < claims.length; i++) if (this.full(claims[i]!)) return { refused: i };
    if (!this.shared) return this.takeLocally(claims);
    const keys = claims.map((c) => this.key("slots", c.key));
    const limits = claims.map((c) => (Number.isFinite(c.limit) ? c.limit : -1));
    return this.scripts
      .take(keys.length + 1, this.key("instances"), ...keys, this.instance, this.ttl, ...limits)
      .then(
        (answer) => {
          const refused = Number(answer);
          if (refused > 0) return { refused: refused - 1 };
          return this.slots(claims);
        },
        (err: Error) => {
          // It may have run without the answer arriving: those counters are written back later.
          for (const c of claims) this.unsynced.add(c.key);
          this.down(err.message);
          return this.takeLocally(claims);
        },
      );
  }

  full(claim: Claim): boolean {
    return (this.held.get(claim.key) ?? 0) >= claim.limit;
  }

  bucket(key: string, rate: number): TokenBucket {
    return new RedisBucket(this, key, rate);
  }

  /** Slots this instance holds of `key` (tests, logs). */
  heldHere(key: string): number {
    return this.held.get(key) ?? 0;
  }

  /**
   * Transfer quotas (src/server/quota-store.ts): adds `bytes` to what `user` moved in `period`
   * (a hash per period, a field per user) and resolves with the total. The hash outlives its
   * period by a few days, renewed at each add. Rejects when Redis is unreachable; the quota
   * meter then counts locally and sends the bytes again with its next batch.
   */
  async addQuota(user: string, period: string, bytes: number): Promise<number> {
    const full = this.key("quota", period);
    const result = await this.client.multi().hincrby(full, user, bytes).pexpire(full, QUOTA_KEEP_MS).exec();
    const [err, total] = result?.[0] ?? [new Error("no answer")];
    if (err) throw err;
    return Number(total);
  }

  /** Every user's total in `period`, for reports. */
  async quotaUsage(period: string): Promise<Map<string, number>> {
    const all = await this.client.hgetall(this.key("quota", period));
    return new Map(Object.entries(all).map(([user, n]) => [user, Number(n)]));
  }

  /** Stops beating and closes the connection; slots still held are left to expire. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.client.disconnect();
  }

  /**
   * The Redis key of `parts` under this store's prefix. The store's own keys separate their parts
   * with NUL (`user\0alice`); in Redis each part is URI-escaped and joined by ":", so the keys
   * read well in redis-cli and a name holding ":" cannot pass for another.
   */
  key(...parts: string[]): string {
    return (
      this.prefix +
      parts
        .flatMap((p) => p.split("\0"))
        .map(encodeURIComponent)
        .join(":")
    );
  }

  /** Runs one of the scripts; rejects (and says Redis is down) when it cannot. */
  async run(name: "tokens" | "failures" | "fail" | "hold", keys: string[], ...args: (string | number)[]) {
    try {
      return await this.scripts[name](keys.length, ...keys, ...args);
    } catch (err) {
      this.down((err as Error).message);
      throw err;
    }
  }

  private takeLocally(claims: readonly Claim[]): Taken {
    for (let i = 0; i < claims.length; i++) if (this.full(claims[i]!)) return { refused: i };
    for (const c of claims) this.unsynced.add(c.key);
    return this.slots(claims);
  }

  /** Counts the claims' slots as this instance's, and how to give them back. */
  private slots(claims: readonly Claim[]): Taken {
    for (const c of claims) this.held.set(c.key, (this.held.get(c.key) ?? 0) + 1);
    return takenSlots(claims, (key) => this.free(key));
  }

  private free(key: string): void {
    const left = (this.held.get(key) ?? 1) - 1;
    if (left > 0) this.held.set(key, left);
    else this.held.delete(key);
    if (!this.shared || this.unsynced.has(key)) {
      this.unsynced.add(key);
      return;
    }
    this.scripts.release(1, this.key("slots", key), this.instance).catch((err: Error) => {
      this.unsynced.add(key);
      this.down(err.message);
    });
  }

  /** Beats; when Redis did not know this instance (or was down), writes its slots back first. */
  private async beat(): Promise<void> {
    if (this.beating || this.closed) return;
    this.beating = true;
    try {
      const since = Number(await this.scripts.beat(1, this.key("instances"), this.instance, this.ttl * 12));
      if (!this.shared || since < 0 || since > this.ttl || this.unsynced.size > 0) await this.resync();
      this.up();
    } catch (err) {
      this.down((err as Error).message);
    } finally {
      this.beating = false;
    }
  }

  /** Writes this instance's count of every counter it holds or may have left wrong. */
  private async resync(): Promise<void> {
    const keys = new Set([...this.held.keys(), ...this.unsynced]);
    this.unsynced.clear();
    if (keys.size === 0) return;
    const batch = this.client.multi();
    for (const key of keys) {
      const n = this.held.get(key) ?? 0;
      if (n > 0) batch.hset(this.key("slots", key), this.instance, n);
      else batch.hdel(this.key("slots", key), this.instance);
    }
    try {
      await batch.exec();
    } catch (err) {
      for (const key of keys) this.unsynced.add(key);
      throw err;
    }
  }

  private up(): void {
    if (this.current.shared && this.announced) return;
    this.announced = true;
    this.current = { shared: true, since: Date.now() };
    this.emit("status", this.current);
  }

  /** Once per outage (and once at start if Redis is not there): the first error says why. */
  private down(error: string): void {
    if (this.closed || (!this.current.shared && this.announced)) return;
    this.announced = true;
    this.current = { shared: false, error, since: Date.now() };
    this.emit("status", this.current);
  }
}
