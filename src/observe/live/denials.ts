import { Reply, Socks4Reply } from "../../protocol/errors.js";
import type { SessionRecord } from "../../server/context.js";
import type { RefusedConnection } from "../../server/server.js";
import type { DecisionEvent } from "../../server/state.js";
import type { DenialView } from "./view.js";

/** Denials kept for the page: the newest, a bounded number. */
export const DENIALS_KEPT = 200;
/** A decision event and the session record of the same refusal arrive this close together. */
const PAIR_MS = 30_000;
/** How far back a record looks for its decision event: refusals interleave only so much. */
const PAIR_LOOKBACK = 32;

/** The session ended in a refusal by a rule or a limit (not a failed dial). */
export function isRefusal(r: SessionRecord): boolean {
  if (r.reply === Reply.NOT_ALLOWED) return true;
  // SOCKS4 has one failure code; the replier names the SOCKS5 one it stands for.
  return (
    r.reply === Socks4Reply.REJECTED &&
    (r.replyName?.endsWith(`(connection not allowed by ruleset)`) ?? false)
  );
}

interface Entry extends DenialView {
  /** A decision event not yet paired with its session record or refused connection. */
  open?: boolean;
}

/**
 * The last `capacity` denials, fed from three places that overlap: a rule's decision event
 * (request and address stages; client stage for rules marked log), then the session record
 * that carried the refusal, or the connection refused at accept. One refusal is one entry: the
 * record or refused connection completes the decision event it follows, if there was one.
 */
export class DenialRing {
  private readonly entries: Entry[] = [];
  private next = 0;
  private seq = 0;

  constructor(private readonly capacity = DENIALS_KEPT) {}

  /** Newest first. */
  list(): DenialView[] {
    const n = this.entries.length;
    const out: DenialView[] = [];
    for (let i = 1; i <= n; i++) {
      const { open: _open, ...view } = this.entries[(this.next - i + n) % n]!;
      out.push(view);
    }
    return out;
  }

  decision(e: DecisionEvent, at = Date.now()): void {
    if (e.decision.verdict !== "deny") return;
    const entry: Entry = {
      id: "",
      at,
      client: e.client,
      stage: e.stage,
      rule: e.decision.rule,
      reason: e.decision.reason,
      open: true,
    };
    if (e.user !== undefined) entry.user = e.user;
    if (e.command !== undefined) entry.command = e.command;
    if (e.target !== undefined) entry.target = e.target;
    this.push(entry);
  }

  /** A session record as it ends: kept when its reply refused the request. */
  session(r: SessionRecord, at = Date.now()): void {
    if (!isRefusal(r)) return;
    const client = r.client;
    const paired = this.pair((d) => d.client === client && d.rule === r.rule && d.target === r.target, at);
    const entry: Entry = paired ?? {
      id: "",
      at,
      client,
      stage: r.reason?.startsWith("refused:") ? "limit" : "request",
      reason: "",
    };
    entry.reason = r.reason ?? r.replyName ?? "refused";
    entry.session = String(r.id);
    if (r.user !== undefined) entry.user = r.user;
    if (r.command !== undefined) entry.command = r.command;
    if (r.target !== undefined) entry.target = r.target;
    if (r.rule !== undefined && !r.reason?.startsWith("refused:")) entry.rule = r.rule;
    if (!paired) this.push(entry);
  }

  /** A connection closed at accept (a client rule, or a sessions limit). */
  refused(r: RefusedConnection, at = Date.now()): void {
    const rule = /^client refused by rule (.+?): /.exec(r.reason)?.[1];
    const paired =
      rule === undefined
        ? undefined
        : this.pair((d) => d.client === r.client && d.stage === "client" && d.rule === rule, at);
    const entry: Entry = paired ?? {
      id: "",
      at,
      client: r.client,
      stage: rule ? "client" : "limit",
      reason: "",
    };
    entry.reason = r.reason;
    if (rule !== undefined) entry.rule = rule;
    if (!paired) this.push(entry);
  }

  /** The newest open decision entry that `matches`, closed. */
  private pair(matches: (d: Entry) => boolean, at: number): Entry | undefined {
    const n = this.entries.length;
    for (let i = 1; i <= Math.min(n, PAIR_LOOKBACK); i++) {
      const d = this.entries[(this.next - i + n) % n]!;
      if (d.open && at - d.at <= PAIR_MS && matches(d)) {
        d.open = false;
        return d;
      }
    }
    return undefined;
  }

  private push(entry: Entry): void {
    entry.id = String(++this.seq);
    if (this.entries.length < this.capacity) this.entries.push(entry);
    else this.entries[this.next] = entry;
    this.next = (this.next + 1) % this.capacity;
  }
}
