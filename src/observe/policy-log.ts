import type { ServerState } from "../server/state.js";
import type { Logger } from "./logger.js";

/** Log lines for rules marked `log: true`, address-stage denials, and every login attempt. */
export function logPolicy(state: ServerState, log: Logger): void {
  state.on("decision", (e) => {
    const d = e.decision;
    const line = {
      event: d.verdict === "allow" ? "policy.allow" : "policy.deny",
      stage: e.stage,
      client: e.client,
      user: e.user,
      command: e.command,
      target: e.target,
      address: e.ip,
      verdict: d.verdict,
      rule: d.rule,
      reason: d.reason,
    };
    const what = `${e.stage} ${d.verdict === "allow" ? "allowed" : "denied"} by rule ${d.rule}`;
    if (d.verdict === "allow") log.info(line, what);
    else log.warn(line, what);
  });
  state.logins.on("login", (e) => {
    const line = {
      event: e.ok ? "auth.ok" : "auth.fail",
      client: e.client,
      user: e.user,
      method: e.method,
      failures: e.failures,
      delayMs: e.delayMs,
    };
    if (e.ok) log.info(line, `login: ${e.user} from ${e.client}`);
    else
      log.warn(
        line,
        `failed login for ${e.user} from ${e.client} (failure ${e.failures}; reply held ${e.delayMs} ms)`,
      );
  });
}
