import { type FailureEntry, type FailureMemory, FORGET_MS, LocalFailures } from "../auth/login-guard.js";
import type { RedisLimitStore } from "./redis-store.js";

/**
 * Failed logins remembered in Redis, per client group, so a failure on one instance delays the
 * next attempt from that address on every other. Redis keeps the count and the time before
 * which no attempt is checked (by its clock; read back as "ms from now"). Every failure is also
 * kept here, which is all there is while Redis is unreachable.
 */
export class RedisFailures implements FailureMemory {
  private readonly local = new LocalFailures(FORGET_MS, 10_000);

  constructor(private readonly store: RedisLimitStore) {}

  private key(group: string): string {
    return this.store.key("logins", group);
  }

  async get(group: string): Promise<FailureEntry | undefined> {
    if (!this.store.shared) return this.local.get(group);
    try {
      const answer = (await this.store.run("failures", [this.key(group)])) as [number, number] | null;
      if (!answer) return undefined;
      return { failures: Number(answer[0]), notBefore: Date.now() + Number(answer[1]) };
    } catch {
      return this.local.get(group);
    }
  }

  async fail(group: string, delayFor: (failures: number) => number): Promise<FailureEntry> {
    const mine = this.local.fail(group, delayFor);
    if (!this.store.shared) return mine;
    try {
      const failures = Number(await this.store.run("fail", [this.key(group)], FORGET_MS));
      const held = Number(await this.store.run("hold", [this.key(group)], delayFor(failures)));
      return { failures, notBefore: Date.now() + held };
    } catch {
      return mine;
    }
  }
}
