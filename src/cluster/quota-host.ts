import type { LocalQuotaStore } from "../server/quota-store.js";
import type { ToPrimary, ToWorker } from "./messages.js";

/**
 * The primary's side of the workers' quota counts: it answers their WorkerQuotaStore from its
 * own store, which its Quotas (src/server/quotas.ts, with `persist`) keeps in the state file.
 * Returns the answer, or undefined for a message that is not about quotas.
 */
export function answerQuota(store: LocalQuotaStore, m: ToPrimary): ToWorker | undefined {
  if (m.ferry === "quotaAdd") {
    const bytes = Number.isFinite(m.bytes) && m.bytes > 0 ? m.bytes : 0;
    return { ferry: "quotaTotal", id: m.id, total: store.add(m.user, m.period, bytes) };
  }
  if (m.ferry === "quotaUsage") {
    return { ferry: "quotaUsage", id: m.id, usage: Object.fromEntries(store.usage(m.period)) };
  }
  return undefined;
}
