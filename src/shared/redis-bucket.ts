import { TokenBucket } from "../server/limits.js";
import type { RedisLimitStore } from "./redis-store.js";

/** An instance takes this much of the shared rate at a time: one Redis call per lease, not per read. */
const LEASE_MS = 250;

/**
 * A bucket filled from the token bucket of the same key in Redis rather than by the clock, so
 * every instance's buckets together get the configured rate. Like the workers' shared bucket
 * (src/cluster/worker-store.ts): a chunk may go into debt and the reader rests; once half
 * empty it leases what fills it again (a few hundred ms of the rate), one lease at a time; the
 * bytes of a lease Redis had to borrow arrive once that debt is paid. While Redis is
 * unreachable it fills by the clock, as a bucket of this instance alone.
 */
export class RedisBucket extends TokenBucket {
  private asking = false;
  private readonly sharedBurst: number;

  constructor(
    private readonly store: RedisLimitStore,
    private readonly key: string,
    rate: number,
  ) {
    super(rate, Math.max(16 * 1024, Math.floor((rate * LEASE_MS) / 1000)));
    this.sharedBurst = Math.max(64 * 1024, Math.floor(rate / 10));
    this.tokens = 0;
    this.refill();
  }

  protected override refill(): void {
    if (!this.store.shared) return super.refill();
    if (this.asking || this.tokens >= this.burst / 2) return;
    this.asking = true;
    const n = Math.ceil(this.burst - this.tokens);
    this.store.run("tokens", [this.store.key("bucket", this.key)], this.rate, this.sharedBurst, n).then(
      (wait) => {
        const ms = Number(wait);
        if (ms <= 0) return this.granted(n);
        setTimeout(() => this.granted(n), ms).unref();
      },
      // Unreachable: the store has said so, and this bucket now fills by the clock.
      () => {
        this.asking = false;
      },
    );
  }

  private granted(n: number): void {
    this.tokens = Math.min(this.burst, this.tokens + n);
    this.asking = false;
  }

  override take(n: number): number {
    if (!this.store.shared) return super.take(n);
    this.tokens -= n;
    this.refill();
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}
