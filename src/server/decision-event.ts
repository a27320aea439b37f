import type { Decision } from "../policy/policy.js";
import type { SessionRecord } from "./context.js";
import type { DecisionEvent } from "./state.js";

/** A decision event from what the session record knows so far. */
export function decisionEvent(
  stage: DecisionEvent["stage"],
  record: SessionRecord,
  decision: Decision,
  ip?: string,
): DecisionEvent {
  const e: DecisionEvent = { stage, client: record.client, decision };
  if (record.user !== undefined) e.user = record.user;
  if (record.command !== undefined) e.command = record.command;
  if (record.target !== undefined) e.target = record.target;
  if (ip !== undefined) e.ip = ip;
  return e;
}
