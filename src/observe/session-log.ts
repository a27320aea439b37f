import type { SessionRecord } from "../server/context.js";
import type { FerryServer } from "../server/server.js";
import type { Logger } from "./logger.js";

/** `client` as one field: the address and port, an IPv6 address in brackets. */
const clientField = (r: SessionRecord): string =>
  `${r.client.includes(":") ? `[${r.client}]` : r.client}:${r.clientPort}`;

export interface SessionLogOptions {
  /** A `session.start` line when the request has been read (default true). */
  starts?: boolean;
}

/**
 * One line per session when its request has been read and one when it ends, one per refused
 * connection, one a second at most when out of descriptors.
 */
export function logSessions(server: FerryServer, parent: Logger, options: SessionLogOptions = {}): void {
  // These lines carry no secret (no field is a password or holds one), so they skip the
  // redaction every other line gets: a quarter of an info line's cost, paid once per session.
  // The control-character escaping (a stream hook) still applies.
  const log = parent.child({}, { redact: [] });
  if (options.starts !== false) {
    server.on("established", (r) => {
      if (!log.isLevelEnabled("info")) return;
      const line = { event: "session.start", ...known(r), rule: r.rule };
      log.info(line, "session started");
    });
  }
  server.on("session", (r) => {
    const ok = r.reply === 0 || r.reply === 90;
    // A clean session is an info line: below the level (warn, say), nothing is built for it.
    if (ok && !log.isLevelEnabled("info")) return;
    const line = {
      event: "session.end",
      ...known(r),
      remote: r.remote,
      bound: r.bound,
      reply: r.reply,
      status: r.status,
      outcome: r.replyName ?? "no reply",
      rule: r.rule,
      bytesUp: r.bytesUp,
      bytesDown: r.bytesDown,
      peer: r.peer,
      peersRefused: r.peersRefused,
      datagramsUp: r.datagramsUp,
      datagramsDown: r.datagramsDown,
      datagramsDropped: r.datagramsDropped,
      durationMs: r.durationMs,
      reason: r.reason,
    };
    if (ok) log.info(line, "session closed");
    else log.warn(line, r.reason ? `session failed: ${r.reason}` : "session failed");
  });
  server.on("refused", (r) => {
    log.warn(
      {
        event: "connection.refused",
        client: r.client,
        clientPort: r.clientPort,
        proxy: r.proxy,
        reason: r.reason,
      },
      `connection refused: ${r.reason}`,
    );
  });
  // At most once a second (FerryServer batches them), however many connections it concerns.
  server.on("fdExhausted", (e) => {
    const limit = e.limit === undefined ? "the open-files limit" : `the open-files limit (${e.limit})`;
    const what =
      e.pausedMs !== undefined
        ? `accept failed at ${limit}: not accepting for ${e.pausedMs} ms`
        : `at ${limit}: closed ${e.closed} new connection${e.closed === 1 ? "" : "s"} at accept`;
    log.warn(
      {
        event: "fd.exhausted",
        fdLimit: e.limit,
        connections: e.connections,
        closed: e.closed,
        pausedMs: e.pausedMs,
      },
      `${what} (${e.connections} open); more are served as these close. Raise the limit (ulimit -n, or LimitNOFILE= in a systemd unit)`,
    );
  });
}

/** What both session lines say of a session: who, how, and what it asked for. */
function known(r: SessionRecord) {
  return {
    session: r.id,
    client: clientField(r),
    proxy: r.proxy,
    protocol: r.protocol,
    tls: r.tls,
    method: r.method,
    user: r.user,
    groups: r.groups,
    protection: r.protection,
    ident: r.ident,
    command: r.command,
    target: r.target,
  };
}
