import type { SessionRecord } from "../../server/context.js";

/**
 * What the admin page and its JSON API show, apart from where it comes from: one process's
 * FerryServer (LocalLive) or every worker's, asked by the primary (src/cluster/live-host.ts).
 * Plain JSON, so a worker can send it over the cluster channel as it is.
 */

/** A session in progress. */
export interface SessionView {
  /** "17" in a single process; "2:17" with workers (worker index, then that worker's id). */
  id: string;
  user?: string;
  /** host:port of the client. */
  client: string;
  target?: string;
  /** The route the admitting rule names (direct, an upstream or a chain), when known. */
  route?: string;
  rule?: string;
  protocol?: string;
  command?: string;
  bytesUp: number;
  bytesDown: number;
  /** Epoch milliseconds. */
  startedAt: number;
  /** The worker serving it (1-based), with workers. */
  worker?: number;
}

/** A refusal: by a rule, a limit, or at accept. */
export interface DenialView {
  /** Unique among the listed ones: a number, prefixed with the worker's index with workers. */
  id: string;
  /** Epoch milliseconds. */
  at: number;
  client: string;
  user?: string;
  command?: string;
  target?: string;
  rule?: string;
  /** What the client was told, or why it was turned away, as logged. */
  reason: string;
  /** client (at accept), request (the target by name), address (the resolved address), limit. */
  stage: string;
  /** The session it ended, when it had one. */
  session?: string;
  worker?: number;
}

/**
 * Totals per user since the start: sessions established, bytes each way (ended and running).
 * Open: a column provider (quotas, say) adds its own keys, and names them in `columns`.
 */
export interface UserRow {
  /** "" for sessions without a user (no authentication). */
  user: string;
  sessions: number;
  /** Running now. */
  active: number;
  bytesUp: number;
  bytesDown: number;
  [column: string]: unknown;
}

/** A column of the users table beyond the fixed ones, filled by a provider. */
export interface UserColumn {
  key: string;
  label: string;
}

export interface LiveSnapshot {
  /** Epoch milliseconds when it was taken. */
  at: number;
  sessions: SessionView[];
  denials: DenialView[];
  users: UserRow[];
  columns: UserColumn[];
  /** Workers that did not answer in time (their sessions are missing). */
  missing?: number[];
}

/** Where the page's figures come from, and how it ends sessions. */
export interface LiveSource {
  snapshot(): Promise<LiveSnapshot>;
  /** Ends session `id`; what it was, or undefined when no such session is running. */
  end(id: string, reason: string): Promise<SessionView | undefined>;
  /** Ends every running session of `user`; the ones it ended. */
  endUser(user: string, reason: string): Promise<SessionView[]>;
}

/** A record still running, as the page shows it. */
export function sessionView(r: SessionRecord & { route?: string }): SessionView {
  const v: SessionView = {
    id: String(r.id),
    client: `${r.client.includes(":") ? `[${r.client}]` : r.client}:${r.clientPort}`,
    bytesUp: r.bytesUp,
    bytesDown: r.bytesDown,
    startedAt: r.startedAt,
  };
  if (r.user !== undefined) v.user = r.user;
  if (r.target !== undefined) v.target = r.target;
  if (r.route !== undefined) v.route = r.route;
  if (r.rule !== undefined) v.rule = r.rule;
  if (r.protocol !== undefined) v.protocol = r.protocol;
  if (r.command !== undefined) v.command = r.command;
  return v;
}
