import type { IncomingMessage } from "node:http";
import { HangupOptions } from "../../dial/hangup.js";
import { type Admitted, Refused } from "../../dial/outbound.js";
import type { RequestQuery } from "../../policy/policy.js";
import type { SocksAddress } from "../../protocol/address.js";
import { Reply } from "../../protocol/errors.js";
import { reportDecisions } from "../admission.js";
import type { Lease } from "../limits.js";
import { type Answer, answerForError } from "./answer.js";
import type { HttpConnection } from "./connection.js";
import { httpLogin } from "./login.js";

/** A request let through: what will be dialled, the limits taken (release when done), and when. */
export interface Passed {
  admitted: Admitted;
  lease: Lease;
  query: RequestQuery;
  /** performance.now() when the decision began: the dial gets what is left of timeouts.connect. */
  started: number;
}

/**
 * Everything an HTTP request passes before a byte leaves, in the order a SOCKS request does:
 * the login, the session slot (the connection's first request), the one decision on the target
 * (src/dial/outbound.ts), and the admitting rule's limits. CONNECT and forwarded requests alike
 * are asked as command `connect` to host:port (what leaves is a TCP connection to it), so every
 * rule about connections holds for them; rules see version 5, which HTTP matches in what it
 * carries (names, logins). Returns the answer to send instead when something says no.
 */
export async function admitHttp(
  conn: HttpConnection,
  req: IncomingMessage,
  target: SocksAddress,
): Promise<Passed | Answer> {
  const { ctx, record } = conn;
  const login = await httpLogin(req, ctx, record, conn, conn.hangup.signal);
  if ("status" in login) return login;
  record.method = login.method;
  if (login.user !== undefined) record.user = login.user;
  if (login.groups) record.groups = login.groups;
  const refused = await conn.establish();
  if (refused) return { status: 503, reply: Reply.NOT_ALLOWED, text: `refused: ${refused}` };
  const query: RequestQuery = {
    client: record.client,
    method: login.method,
    version: 5,
    command: "connect",
    target,
    ...(login.user !== undefined && { user: login.user }),
    ...(login.groups && { groups: login.groups }),
  };
  const started = performance.now();
  let admitted: Admitted;
  try {
    admitted = await ctx.outbound.admit(
      query,
      new HangupOptions(conn.hangup, ctx.config.timeouts.connect, record.client),
    );
    record.rule = admitted.decision.rule;
    reportDecisions(admitted.decided, ctx, record);
  } catch (err) {
    if (err instanceof Refused) {
      record.rule = err.decision.rule;
      reportDecisions(err.decided, ctx, record);
    }
    return answerForError(err);
  }
  const lease = await ctx.state.limits.acquire(ctx.config, query, admitted.decision);
  if ("refused" in lease) return { status: 429, reply: Reply.NOT_ALLOWED, text: `refused: ${lease.refused}` };
  return { admitted, lease, query, started };
}

/** What is left of timeouts.connect for the dial after the decision took its share (0: no limit). */
export function dialBudget(total: number, started: number): number {
  return total > 0 ? Math.max(1, Math.round(total - (performance.now() - started))) : 0;
}
