import type { Config } from "../config/schema.js";
import { formatRate } from "../config/units.js";
import type { Decision, RequestQuery } from "../policy/policy.js";
import { type Claim, type LimitStore, type Taken, userKey } from "./limit-store.js";

/**
 * A token bucket that may go into debt: a chunk already read is always passed on whole (no
 * splitting, no copying), and the reader then rests until the debt is paid back. The average
 * rate holds; a burst is at most `burst` bytes plus one chunk.
 */
export class TokenBucket {
  protected tokens: number;
  private last = performance.now();
  constructor(
    readonly rate: number,
    readonly burst = Math.max(64 * 1024, Math.floor(rate / 10)),
  ) {
    this.tokens = burst;
  }

  /** Brings the tokens up to date (a shared bucket asks for more here instead). */
  protected refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
  }

  /**
   * For datagrams, which cannot wait: takes `n` bytes from every bucket if each has them, else
   * takes nothing and returns false (the datagram is dropped, as an overloaded link would).
   */
  static admit(buckets: readonly TokenBucket[], n: number): boolean {
    for (const b of buckets) {
      b.refill();
      if (b.tokens < n) return false;
    }
    for (const b of buckets) b.tokens -= n;
    return true;
  }

  /** Takes `n` bytes; returns how many ms to wait before reading more (0: carry on). */
  take(n: number): number {
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}

/** The buckets one session's relay draws from, per direction. */
export interface Throttle {
  up: TokenBucket[];
  down: TokenBucket[];
}

export interface Lease {
  /** Present only when some bandwidth limit applies; the relay's plain path is used otherwise. */
  throttle?: Throttle;
  release(): void;
}

export type Admission = Lease | { refused: string };

const NOTHING_TAKEN: Taken = { release: () => {} };

interface Pair {
  rate: number;
  up: TokenBucket;
  down: TokenBucket;
}

/** A refusal's words, by the claim that was full. */
type Refusal = (limit: number) => string;

/**
 * The limits that depend on who asked and which rule admitted them: sessions per user, a rule's
 * sessions cap, and their bandwidth. The counts are kept in the LimitStore (this process's, or
 * shared by every worker); the buckets here, one per user and per rule, draw on the store's.
 * A user's sessions are counted whatever configuration they started under; a rule's counters
 * and bucket belong to the configuration that defined it, so a reload starts them afresh.
 */
export class Limits {
  private readonly userBuckets = new Map<string, Pair>();
  private readonly ruleBuckets = new WeakMap<object, Map<string, Pair>>();
  /** Which reload each configuration came with: rule counters are kept per generation. */
  private readonly generations = new WeakMap<object, number>();

  constructor(private readonly store: LimitStore) {}

  /** Notes that `config` is the one reload `generation` builds (every worker numbers them alike). */
  adopt(config: Config, generation: number): void {
    this.generations.set(config, generation);
  }

  /** Admits a request the policy allowed, or says which limit refuses it. */
  acquire(config: Config, q: RequestQuery, decision: Decision): Admission | Promise<Admission> {
    const user = q.user;
    const caps = decision.caps;
    const claims: Claim[] = [];
    const refusals: Refusal[] = [];
    if (user !== undefined) {
      // Counted even with no cap, so that a reload which sets one counts the sessions running.
      claims.push({ key: userKey(user), limit: config.limits.sessionsPerUser ?? Number.POSITIVE_INFINITY });
      refusals.push((n) => `user ${user} already has ${n} sessions (limits.sessionsPerUser)`);
    }
    if (caps?.sessions !== undefined) {
      claims.push({ key: this.ruleKey(config, caps.key), limit: caps.sessions });
      refusals.push((n) => `rule ${decision.rule} already admits ${n} sessions (its sessions cap)`);
    }
    const throttle = this.throttle(config, user, caps);
    const admit = (taken: Taken): Admission => {
      if ("refused" in taken) return { refused: refusals[taken.refused]!(claims[taken.refused]!.limit) };
      const lease: Lease = { release: taken.release };
      if (throttle) lease.throttle = throttle;
      return lease;
    };
    if (claims.length === 0) return admit(NOTHING_TAKEN);
    const taken = this.store.take(claims);
    return taken instanceof Promise ? taken.then(admit) : admit(taken);
  }

  /** The buckets of the user's and the rule's bandwidth, when either is limited. */
  private throttle(config: Config, user: string | undefined, caps: Decision["caps"]): Throttle | undefined {
    const up: TokenBucket[] = [];
    const down: TokenBucket[] = [];
    const rate = config.limits.bandwidth.perUser;
    if (user !== undefined && rate !== undefined) {
      let b = this.userBuckets.get(user);
      if (!b || b.rate !== rate) {
        b = this.pair(userKey(user), rate);
        this.userBuckets.set(user, b);
      }
      up.push(b.up);
      down.push(b.down);
    }
    if (caps?.bandwidth !== undefined) {
      let rules = this.ruleBuckets.get(config);
      if (!rules) {
        rules = new Map();
        this.ruleBuckets.set(config, rules);
      }
      let b = rules.get(caps.key);
      if (!b) {
        b = this.pair(this.ruleKey(config, caps.key), caps.bandwidth);
        rules.set(caps.key, b);
      }
      up.push(b.up);
      down.push(b.down);
    }
    return up.length > 0 ? { up, down } : undefined;
  }

  /** A rule's key in the store: its configuration's generation, so a reload starts it afresh. */
  private ruleKey(config: Config, rule: string): string {
    return `rule\0${this.generations.get(config) ?? 0}\0${rule}`;
  }

  private pair(key: string, rate: number): Pair {
    return { rate, up: this.store.bucket(`${key}\0up`, rate), down: this.store.bucket(`${key}\0down`, rate) };
  }

  /** What applies to a user, in words (for logs and `ferry check`). */
  static describe(config: Config, decision: Decision): string[] {
    const out: string[] = [];
    if (config.limits.sessionsPerUser !== undefined)
      out.push(`sessions per user: ${config.limits.sessionsPerUser}`);
    if (config.limits.bandwidth.perUser !== undefined)
      out.push(`bandwidth per user: ${formatRate(config.limits.bandwidth.perUser)} each way`);
    if (decision.caps?.sessions !== undefined)
      out.push(`sessions admitted by this rule: ${decision.caps.sessions}`);
    if (decision.caps?.bandwidth !== undefined)
      out.push(`bandwidth shared by this rule's sessions: ${formatRate(decision.caps.bandwidth)} each way`);
    return out;
  }
}
