import type { QuotaStore } from "../server/quota-store.js";
import type { RedisLimitStore } from "./redis-store.js";

/**
 * Transfer quotas counted in the Redis every instance shares (`state: { redis }`), so a user's
 * quota holds across instances. While Redis is unreachable every add is refused at once; the
 * quota meters then count locally and send their bytes when it answers again.
 */
export class RedisQuotaStore implements QuotaStore {
  constructor(private readonly redis: RedisLimitStore) {}

  add(user: string, period: string, bytes: number): Promise<number> {
    if (!this.redis.shared) return Promise.reject(new Error("Redis is unreachable"));
    return this.redis.addQuota(user, period, bytes);
  }

  usage(period: string): Promise<ReadonlyMap<string, number>> {
    if (!this.redis.shared) return Promise.resolve(new Map());
    return this.redis.quotaUsage(period);
  }
}
