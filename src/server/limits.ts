import type { Config } from "../config/schema.js";
import { formatRate } from "../config/units.js";
import type { Decision, RequestQuery } from "../policy/policy.js";

/**
 * A token bucket that may go into debt: a chunk already read is always passed on whole (no
 * splitting, no copying), and the reader then rests until the debt is paid back. The average
 * rate holds; a burst is at most `burst` bytes plus one chunk.
 */
export class TokenBucket {
  private tokens: number;
  private last = performance.now();
  constructor(
    readonly rate: number,
    readonly burst = Math.max(64 * 1024, Math.floor(rate / 10)),
  ) {
    this.tokens = burst;
  }

  private refill(): void {
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

interface Pair {
  rate: number;
  up: TokenBucket;
  down: TokenBucket;
}

const pair = (rate: number): Pair => ({ rate, up: new TokenBucket(rate), down: new TokenBucket(rate) });

/**
 * Counters and buckets for the limits that depend on who asked and which rule admitted them.
 * One instance lives as long as the server, across reloads: a user's sessions are counted
 * whatever configuration they started under. Per-rule state belongs to the configuration that
 * defined the rule, so a reload starts the new rules' counters afresh.
 */
export class Limits {
  private readonly userSessions = new Map<string, number>();
  private readonly userBuckets = new Map<string, Pair>();
  private readonly ruleState = new WeakMap<object, Map<string, { sessions: number; buckets?: Pair }>>();

  /** Admits a request the policy allowed, or says which limit refuses it. */
  acquire(config: Config, q: RequestQuery, decision: Decision): Lease | { refused: string } {
    const perUser = config.limits.sessionsPerUser;
    const user = q.user;
    if (user !== undefined && perUser !== undefined && (this.userSessions.get(user) ?? 0) >= perUser) {
      return { refused: `user ${user} already has ${perUser} sessions (limits.sessionsPerUser)` };
    }
    const caps = decision.caps;
    let rules = this.ruleState.get(config);
    if (caps && !rules) {
      rules = new Map();
      this.ruleState.set(config, rules);
    }
    const rule = caps ? (rules!.get(caps.key) ?? { sessions: 0 }) : undefined;
    if (caps?.sessions !== undefined && rule!.sessions >= caps.sessions) {
      return { refused: `rule ${decision.rule} already admits ${caps.sessions} sessions (its sessions cap)` };
    }

    const up: TokenBucket[] = [];
    const down: TokenBucket[] = [];
    const rate = config.limits.bandwidth.perUser;
    if (user !== undefined && rate !== undefined) {
      let b = this.userBuckets.get(user);
      if (!b || b.rate !== rate) {
        b = pair(rate);
        this.userBuckets.set(user, b);
      }
      up.push(b.up);
      down.push(b.down);
    }
    if (caps?.bandwidth !== undefined) {
      rule!.buckets ??= pair(caps.bandwidth);
      up.push(rule!.buckets.up);
      down.push(rule!.buckets.down);
    }

    if (user !== undefined) this.userSessions.set(user, (this.userSessions.get(user) ?? 0) + 1);
    if (caps) {
      rule!.sessions++;
      rules!.set(caps.key, rule!);
    }
    let released = false;
    const lease: Lease = {
      release: () => {
        if (released) return;
        released = true;
        if (user !== undefined) {
          const left = (this.userSessions.get(user) ?? 1) - 1;
          if (left > 0) this.userSessions.set(user, left);
          else this.userSessions.delete(user);
        }
        if (rule) rule.sessions--;
      },
    };
    if (up.length > 0) lease.throttle = { up, down };
    return lease;
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
