import type { FerryServer } from "./server.js";
import type { ServerState } from "./state.js";

/**
 * When a user goes over their quota (counted here or, with workers, heard from the others),
 * every session of theirs still open ends now: a session moving bytes would be cut at its next
 * chunk anyway, an idle one would otherwise hold on.
 */
export function cutOverQuota(server: FerryServer, state: ServerState): void {
  state.quotas.on("exhausted", (s) => {
    const reason = `user ${s.user} has used up the transfer quota; it resets at ${s.resetsAt}`;
    const ids = [...server.sessions()].filter((r) => r.user === s.user).map((r) => r.id);
    for (const id of ids) server.endSession(id, reason);
  });
}
