import type { DialOptions } from "../dial/dialer.js";
import { replyForError } from "../dial/errors.js";
import { type Admitted, Refused } from "../dial/outbound.js";
import type { Decision, RequestQuery } from "../policy/policy.js";
import { Reply } from "../protocol/errors.js";
import type { ServerContext, SessionRecord } from "./context.js";
import { decisionEvent } from "./decision-event.js";
import type { Handshake } from "./handshake.js";
import type { Admission, Lease } from "./limits.js";
import type { QuotaAdmission } from "./quotas.js";

/**
 * Takes the limits of the rule that admitted the request (sessions per user, the rule's own
 * caps, bandwidth) and hands its throttle to the session. On a refusal the client has been
 * answered and undefined is returned. A promise only when a shared store had to be asked.
 */
export function takeLease(
  hs: Handshake,
  query: RequestQuery,
  decision: Decision,
  ctx: ServerContext,
  record: SessionRecord,
): Lease | undefined | Promise<Lease | undefined> {
  // The user's transfer quota first: a user over it takes no slot.
  const quota = query.user === undefined ? undefined : ctx.state.quotas.admit(query.user);
  if (quota instanceof Promise) return quota.then((q) => withQuota(q, hs, query, decision, ctx, record));
  return withQuota(quota, hs, query, decision, ctx, record);
}

function withQuota(
  quota: QuotaAdmission,
  hs: Handshake,
  query: RequestQuery,
  decision: Decision,
  ctx: ServerContext,
  record: SessionRecord,
): Lease | undefined | Promise<Lease | undefined> {
  if (quota && "refused" in quota) return settle(quota, hs, record);
  const done = (l: Admission): Lease | undefined => {
    const lease = settle(l, hs, record);
    if (!quota) return lease;
    if (!lease) {
      quota.release();
      return undefined;
    }
    hs.meter = quota.meter;
    return {
      ...lease,
      release: () => {
        lease.release();
        quota.release();
      },
    };
  };
  const lease = ctx.state.limits.acquire(ctx.config, query, decision);
  return lease instanceof Promise ? lease.then(done) : done(lease);
}

function settle(lease: Admission, hs: Handshake, record: SessionRecord): Lease | undefined {
  if ("refused" in lease) {
    record.reason = `refused: ${lease.refused}`;
    hs.replier.failure(Reply.NOT_ALLOWED);
    return undefined;
  }
  if (lease.throttle) hs.throttle = lease.throttle;
  return lease;
}

/** BIND and UDP before any peer or datagram: may the command run, through which route. */
export function decideCommand(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
): Decision | undefined {
  const decision = ctx.policy.command(query);
  record.rule = decision.rule;
  if (decision.log) ctx.state.emit("decision", decisionEvent("request", record, decision));
  if (decision.verdict === "deny") {
    record.denied = true;
    record.reason = `denied by rule ${decision.rule}: ${decision.reason}`;
    hs.replier.failure(Reply.NOT_ALLOWED);
    return undefined;
  }
  record.route = decision.route ?? "direct";
  return decision;
}

/** Emits the decision events of an admission or refusal: rules marked `log`, and every denial. */
export function reportDecisions(
  decided: Refused["decided"] | Admitted["decided"],
  ctx: ServerContext,
  record: SessionRecord,
): void {
  for (const { decision, ip } of decided) {
    if (decision.log || decision.verdict === "deny") {
      ctx.state.emit(
        "decision",
        decisionEvent(ip === undefined ? "request" : "address", record, decision, ip),
      );
    }
  }
}

/**
 * CONNECT's decision: the target decided on what will be sent (src/policy/admit.ts), the record
 * naming the rule that admitted or refused it. On a refusal or failure the client has been
 * answered and undefined is returned.
 */
export async function admitTarget(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
  options: DialOptions,
): Promise<Admitted | undefined> {
  try {
    const admitted = await ctx.outbound.admit(query, options);
    record.rule = admitted.decision.rule;
    reportDecisions(admitted.decided, ctx, record);
    return admitted;
  } catch (err) {
    if (err instanceof Refused) {
      record.rule = err.decision.rule;
      record.denied = true;
      reportDecisions(err.decided, ctx, record);
    }
    record.reason = (err as Error).message;
    hs.replier.failure(replyForError(err));
    return undefined;
  }
}
