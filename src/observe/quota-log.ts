import { formatBytes } from "../config/units.js";
import type { ServerState } from "../server/state.js";
import { ev } from "./events.js";
import type { Logger } from "./logger.js";

/** A line when a user runs out of their transfer quota, and when the state file cannot be written. */
export function logQuotas(state: ServerState, log: Logger): void {
  state.quotas.on("exhausted", (s) => {
    log.warn(
      ev("quota.exhausted", {
        user: s.user,
        used: s.used,
        limit: s.limit,
        period: s.period,
        resetsAt: s.resetsAt,
      }),
      `user ${s.user} has used up the transfer quota (${formatBytes(s.used)} of ${formatBytes(s.limit)} this ${s.period}): sessions refused and cut until ${s.resetsAt}`,
    );
  });
  state.quotas.on("warning", (message) => log.warn(ev("quota.warning"), message));
}
