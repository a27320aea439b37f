import { readFile } from "node:fs/promises";
import { ConfigError } from "../config/load.js";
import type { Config } from "../config/schema.js";
import { ev } from "../observe/events.js";
import type { Logger } from "../observe/logger.js";
import type { LimitStore } from "../server/limit-store.js";
import { Quotas } from "../server/quotas.js";
import { RedisQuotaStore } from "./redis-quota-store.js";
import { RedisLimitStore } from "./redis-store.js";

/** How long start-up waits for Redis before it serves with local limits (and says so). */
const START_WAIT_MS = 3000;

/** The URL with its password, if any, hidden: for log lines. */
export function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * The store `state:` asks for: Redis, once it answers (or after START_WAIT_MS, serving with
 * local limits until it does); undefined without `state:` (the caller's own store).
 */
export async function sharedStore(config: Config): Promise<RedisLimitStore | undefined> {
  const state = config.state;
  if (!state) return undefined;
  let password: string | undefined;
  if (state.passwordFile) {
    try {
      password = (await readFile(state.passwordFile, "utf8")).trim();
    } catch (err) {
      throw new ConfigError(
        `state.passwordFile: cannot read ${state.passwordFile}: ${(err as Error).message}`,
      );
    }
  }
  const store = new RedisLimitStore({
    url: state.redis,
    prefix: state.prefix,
    ...(password && { password }),
  });
  await store.ready(START_WAIT_MS).catch(() => {});
  return store;
}

/**
 * Transfer quotas counted in the shared Redis, by `shares` processes of this instance; undefined
 * without Redis (the caller's own quotas).
 */
export function sharedQuotas(store: RedisLimitStore | undefined, shares: number): Quotas | undefined {
  return store && new Quotas(new RedisQuotaStore(store), { shared: true, shares });
}

/** One line when the shared state goes, one when it comes back, each saying what it means. */
export function logSharedState(store: LimitStore, url: string, log: Logger): void {
  if (!(store instanceof RedisLimitStore)) return;
  const where = redactedUrl(url);
  const tell = () => {
    const s = store.status;
    if (s.shared) {
      log.info(
        ev("state.shared", { redis: where, shared: true as const }),
        `shared state: Redis at ${where} answers; limits are shared`,
      );
    } else {
      log.warn(
        ev("state.unshared", { redis: where, shared: false as const, error: s.error }),
        `shared state: Redis at ${where} is unreachable (${s.error}); serving with this instance's own limits ` +
          "(session caps, bandwidth and login throttling count only its own clients) until it answers again: " +
          "check that Redis runs and this host can reach it",
      );
    }
  };
  tell();
  store.on("status", tell);
}
